"""The synthetic set as 16-bit DICOM files, with the header values a hospital's files carry.

``make-synthetic --format dicom`` draws the same pictures as the PNG set
(:func:`clot_hpo.data.synthetic.make_synthetic`, same arguments) and writes each as a CT-like
DICOM file: 16-bit unsigned stored values with a rescale slope and intercept, every second
image stored inverted as MONOCHROME1, no window (so the full range applies), one PatientID per
synthetic patient, and made-up but realistic identifying values (names, birth dates,
institution, device serials, free-text descriptions, UIDs). Those values exist so that a test
can prove none of them leaves the machine; they are fictitious.

The layout is class folders (``OUT/positive/*.dcm``, ``OUT/negative/*.dcm``) without a metadata
CSV, so a split groups the files by (a salted hash of) their PatientID, as it would a real
export. Decoding a file gives back the PNG's grayscale pixels exactly (up to float rounding).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clot_hpo.data.synthetic import DEFAULT_DIFFICULTY, make_synthetic
from clot_hpo.errors import DataError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

MARKER = ".synthetic-dicom.json"
RESCALE_SLOPE = 0.5
RESCALE_INTERCEPT = -1024.0
_FIRST = ["Jane", "John", "Maria", "Wei", "Amara", "Lars", "Priya", "Tomasz", "Aiko", "Omar"]
_LAST = ["Doe", "Smith", "Garcia", "Chen", "Okafor", "Nilsson", "Patel", "Nowak", "Sato", "Haddad"]
_CITIES = ["Springfield", "Riverton", "Lakeside", "Fairview", "Kingsport"]


def _patient(index: int, rng: np.random.Generator) -> dict[str, str]:
    """Made-up identifying values of synthetic patient ``index`` (deterministic from ``rng``)."""
    first, last = _FIRST[int(rng.integers(len(_FIRST)))], _LAST[int(rng.integers(len(_LAST)))]
    year, month, day = int(rng.integers(1930, 2005)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    city = _CITIES[int(rng.integers(len(_CITIES)))]
    return {
        "PatientName": f"{last}{index:03d}^{first}",
        "PatientID": f"MRN{int(rng.integers(10**6, 10**7))}{index:04d}",
        "PatientBirthDate": f"{year:04d}{month:02d}{day:02d}",
        "OtherPatientIDs": f"NHS{int(rng.integers(10**8, 10**9))}",
        "PatientAddress": f"{int(rng.integers(1, 999))} Elm Street, {city}",
        "PatientTelephoneNumbers": f"+1-555-{int(rng.integers(1000, 9999))}",
        "AccessionNumber": f"ACC{int(rng.integers(10**7, 10**8))}",
        "StudyID": f"ST{int(rng.integers(10**5, 10**6))}",
        "StudyDate": f"2024{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        "ReferringPhysicianName": f"Dr^{_LAST[int(rng.integers(len(_LAST)))]}{index:03d}",
        "StudyDescription": f"CTA chest for suspected PE, {first} {last}{index:03d}",
    }


def _dataset(pixels: np.ndarray, patient: dict[str, str], index: int, seed: int) -> Dataset:
    """A CT image dataset of 8-bit grayscale ``pixels`` stored as 16-bit values."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    inverted = index % 2 == 1  # every second image is MONOCHROME1: stored inverted
    stored = pixels.astype(np.uint32) * 257  # 0..255 -> 0..65535: the full 16-bit range
    if inverted:
        stored = 65535 - stored
    sop_uid = generate_uid(entropy_srcs=["clot-hpo synthetic", str(seed), "sop", str(index)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for keyword, value in patient.items():
        setattr(ds, keyword, value)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["clot-hpo synthetic", str(seed), patient["PatientID"]])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["clot-hpo synthetic", str(seed), "series", str(index)])
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=["clot-hpo synthetic", str(seed), "for", str(index)])
    ds.Modality = "CT"
    ds.InstitutionName = "St. Example General Hospital"
    ds.InstitutionAddress = "1 Hospital Road, Springfield"
    ds.StationName = f"CT-STATION-{index % 3 + 1:02d}"
    ds.DeviceSerialNumber = f"SN-{seed % 10000:04d}-{index % 3:02d}77"
    ds.OperatorsName = "Tech^Alex"
    ds.SeriesDescription = "Synthetic CTA (fictitious patient)"
    ds.ImageComments = f"synthetic image {index}; patient {patient['PatientName']}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if inverted else "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = RESCALE_SLOPE, RESCALE_INTERCEPT, "HU"
    ds.PixelData = stored.astype("<u2").tobytes()
    return ds


def make_synthetic_dicom(
    out: Path,
    *,
    n_per_class: int,
    image_size: int,
    seed: int,
    difficulty: float | str = DEFAULT_DIFFICULTY,
) -> Path:
    """Write the synthetic set (same pictures as the PNG one) as 16-bit DICOM files.

    Args:
        out: the folder to create (a folder written by this function is replaced; any other
            non-empty folder is refused).
        n_per_class: images per class.
        image_size: side length in pixels.
        seed: random seed (the same as for the PNG set gives the same pictures).
        difficulty: as for :func:`~clot_hpo.data.synthetic.make_synthetic`.

    Returns:
        ``out``.

    Raises:
        DataError: the arguments are out of range or ``out`` holds other files.
    """
    from PIL import Image
    from pydicom import dcmwrite

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise DataError(
            f"{out}: folder exists, is not empty and was not written by make-synthetic; "
            "choose a new folder or remove it"
        )
    with tempfile.TemporaryDirectory(prefix="clot-hpo-synthetic-") as tmp:
        source = make_synthetic(
            Path(tmp) / "png",
            n_per_class=n_per_class,
            image_size=image_size,
            seed=seed,
            difficulty=difficulty,
            progress=False,
        )
        for name in ("positive", "negative"):
            shutil.rmtree(out / name, ignore_errors=True)
            (out / name).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, 1729])
        patients: dict[str, dict[str, str]] = {}
        rows = (source / "metadata.csv").read_text(encoding="utf-8").splitlines()[1:]
        for index, row in enumerate(rows):
            rel, cls, group = row.split(",")
            if group not in patients:
                patients[group] = _patient(len(patients), rng)
            gray = np.asarray(Image.open(source / rel).convert("L"), dtype=np.uint8)
            dataset = _dataset(gray, patients[group], index, seed)
            dcmwrite(out / cls / f"img{index:05d}.dcm", dataset, enforce_file_format=True)
    (out / MARKER).write_text(
        json.dumps({"n_per_class": n_per_class, "image_size": image_size, "seed": seed}) + "\n",
        encoding="utf-8",
    )
    return out


__all__ = ["RESCALE_INTERCEPT", "RESCALE_SLOPE", "make_synthetic_dicom"]
