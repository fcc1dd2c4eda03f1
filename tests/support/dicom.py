"""DICOM helpers shared by tests: small datasets written with pydicom, and the identifying values.

``IDENTIFYING_KEYWORDS`` are the attributes of DICOM PS3.15 Annex E's Basic Application Level
Confidentiality Profile (table E.1-1) that a CT/MR/CR image file usually carries: names,
identifiers, dates and times, institution, device, free text and the instance UIDs. A test
collects their values from a study's files and greps everything the study wrote for them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

IDENTIFYING_KEYWORDS = (
    "AccessionNumber",
    "AcquisitionDate",
    "AcquisitionDateTime",
    "AcquisitionTime",
    "AdditionalPatientHistory",
    "AdmissionID",
    "ContentDate",
    "ContentTime",
    "DeviceSerialNumber",
    "FrameOfReferenceUID",
    "ImageComments",
    "InstitutionAddress",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "MediaStorageSOPInstanceUID",
    "OperatorsName",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientAddress",
    "PatientAge",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientComments",
    "PatientID",
    "PatientName",
    "PatientTelephoneNumbers",
    "PerformingPhysicianName",
    "PhysiciansOfRecord",
    "ReferringPhysicianName",
    "RequestingPhysician",
    "SOPInstanceUID",
    "SeriesDate",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesTime",
    "StationName",
    "StudyDate",
    "StudyDescription",
    "StudyID",
    "StudyInstanceUID",
    "StudyTime",
)


def identifying_values(files: Iterable[str | Path]) -> set[str]:
    """Every non-trivial value of :data:`IDENTIFYING_KEYWORDS` in ``files`` (and name parts)."""
    from pydicom import dcmread

    values: set[str] = set()
    for path in files:
        ds = dcmread(path, stop_before_pixels=True, force=True)
        for keyword in IDENTIFYING_KEYWORDS:
            holder = ds.file_meta if keyword.startswith("MediaStorage") else ds
            value = str(holder.get(keyword, "") or "").strip()
            if len(value) < 4:  # "CT", "1": too short to mean anything in a grep
                continue
            values.add(value)
            if keyword.endswith("Name") and "^" in value:  # a person name: each part too
                values.update(part for part in value.split("^") if len(part) >= 4)
    return values


def grep_files(root: Path, values: set[str]) -> list[tuple[str, str]]:
    """``(file, value)`` for each value found in a file under ``root`` (bytes, case-sensitive)."""
    found = []
    encoded = {v: v.encode("utf-8") for v in values}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            found += [(str(path), v) for v, raw in encoded.items() if raw in data]
    return found


def write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    transfer_syntax: str | None = None,
    pixel_data: bool = True,
    **attrs: Any,
) -> Path:
    """A minimal image file: ``stored`` (uint16 (R, C), (F, R, C) or uint8 (R, C, 3)) plus ``attrs``."""
    from pydicom import dcmwrite
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    colour = stored.ndim == 3 and stored.shape[-1] == 3 and stored.dtype == np.uint8
    frames = stored.shape[0] if stored.ndim == 3 and not colour else 1
    ds.Rows, ds.Columns = stored.shape[-3 if colour else -2], stored.shape[-2 if colour else -1]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else photometric
    if colour:
        ds.PlanarConfiguration = 0
    bits = 8 if stored.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    if pixel_data:
        ds.PixelData = stored.astype("<u2" if bits == 16 else "u1").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def shipped_test_files() -> list[Path]:
    """The DICOM files of pydicom's own test set that its wheel ships (nothing downloaded)."""
    import pydicom.data
    from pydicom.data import get_testdata_files

    from clot_hpo.data.limits import is_dicom_file

    base = Path(pydicom.data.__file__).parent / "test_files"
    return sorted(
        Path(f)
        for f in get_testdata_files()
        if Path(f).is_relative_to(base) and Path(f).is_file() and is_dicom_file(f)
    )
