"""Issue 23, item 1: DICOM files read by the data layer's one decoder (no TensorFlow here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clot_hpo.config import DataConfig
from clot_hpo.config.schema import DicomConfig
from clot_hpo.data import dicom as dicom_module
from clot_hpo.data.dicom import (
    DicomRefused,
    DicomSettings,
    decode_dicom,
    read_dicom_header,
    settings_for_model,
)
from clot_hpo.data.limits import check_headers
from clot_hpo.data.pipeline import list_images
from clot_hpo.data.prepare import prepare_data
from clot_hpo.data.scan import scan_dataset
from clot_hpo.data.synthetic import make_synthetic
from clot_hpo.data.synthetic_dicom import RESCALE_INTERCEPT, RESCALE_SLOPE, make_synthetic_dicom
from clot_hpo.data.validate import inspect_image, validate_images
from clot_hpo.errors import DataError
from tests.support.dicom import grep_files, identifying_values, shipped_test_files, write_dicom

LIMIT = 50_000_000


def ramp(rows: int = 8, cols: int = 8, top: int = 4095) -> np.ndarray:
    """uint16 values rising from 0 to ``top`` across the image."""
    return np.linspace(0, top, rows * cols).reshape(rows, cols).astype(np.uint16)


@pytest.fixture(scope="module")
def synthetic_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same 20 + 20 synthetic pictures as PNG and as 16-bit DICOM."""
    base = tmp_path_factory.mktemp("synthetic")
    png = make_synthetic(base / "png", n_per_class=20, image_size=24, seed=3)
    dcm = make_synthetic_dicom(base / "dcm", n_per_class=20, image_size=24, seed=3)
    return png, dcm


# ----- what a file becomes -------------------------------------------------------------------
def test_synthetic_dicom_decodes_to_the_png_pixels_through_rescale_and_monochrome1(
    synthetic_pair: tuple[Path, Path],
) -> None:
    png, dcm = synthetic_pair
    rows = (png / "metadata.csv").read_text().splitlines()[1:]
    kinds = set()
    for index, row in enumerate(rows):
        rel, cls, _ = row.split(",")
        gray = np.asarray(Image.open(png / rel).convert("L"), dtype=np.float32)
        pixels, header = decode_dicom(dcm / cls / f"img{index:05d}.dcm", max_pixels=LIMIT)
        kinds.add(header.photometric)
        assert pixels.dtype == np.float32 and pixels.shape == (24, 24, 3)
        np.testing.assert_allclose(pixels[..., 0], gray, atol=1e-3)
    assert kinds == {"MONOCHROME1", "MONOCHROME2"}


def test_synthetic_dicom_files_are_16_bit_with_rescale(synthetic_pair: tuple[Path, Path]) -> None:
    from pydicom import dcmread

    _, dcm = synthetic_pair
    ds = dcmread(next((dcm / "positive").glob("*.dcm")))
    assert (ds.BitsAllocated, ds.BitsStored) == (16, 16)
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (RESCALE_SLOPE, RESCALE_INTERCEPT)
    assert ds.PatientID.startswith("MRN")


def test_the_files_own_window_applies_in_modality_units(tmp_path: Path) -> None:
    # Stored 0..4095, rescaled to -1024..3071 HU; window 40/400 (soft tissue): -160 HU black, 240 white.
    path = write_dicom(
        tmp_path / "w.dcm",
        ramp(),
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=40,
        WindowWidth=400,
    )
    pixels, _ = decode_dicom(path, max_pixels=LIMIT)
    hu = ramp().astype(np.float64) - 1024
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1) * 255
    np.testing.assert_allclose(pixels[..., 0], expected, atol=1e-3)
    # The config's window does not override the file's own.
    again, _ = decode_dicom(path, settings=DicomSettings(window=(300, 600)), max_pixels=LIMIT)
    np.testing.assert_allclose(again, pixels)


def test_the_config_window_applies_when_the_file_has_none_else_the_full_range(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "n.dcm", ramp(), RescaleSlope=2, RescaleIntercept=-1000)
    full, _ = decode_dicom(path, max_pixels=LIMIT)
    values = ramp().astype(np.float64) * 2 - 1000
    low, high = -1000.0, 65535 * 2 - 1000.0  # the 16 stored bits, rescaled
    np.testing.assert_allclose(full[..., 0], (values - low) / (high - low) * 255, atol=1e-3)
    cta, _ = decode_dicom(path, settings=DicomSettings(window=(300, 600)), max_pixels=LIMIT)
    expected = np.clip((values - 299.5) / 599 + 0.5, 0, 1) * 255
    np.testing.assert_allclose(cta[..., 0], expected, atol=1e-3)
    # Not rounded to 8 bits: the window's output keeps its fractions.
    assert np.any(np.abs(cta - np.rint(cta)) > 0.01)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    two, _ = decode_dicom(write_dicom(tmp_path / "2.dcm", ramp()), max_pixels=LIMIT)
    one, _ = decode_dicom(
        write_dicom(tmp_path / "1.dcm", ramp(), photometric="MONOCHROME1"), max_pixels=LIMIT
    )
    np.testing.assert_allclose(one, 255.0 - two, atol=1e-4)


def test_rgb_is_kept_in_colour(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 50
    pixels, header = decode_dicom(write_dicom(tmp_path / "c.dcm", rgb), max_pixels=LIMIT)
    assert header.samples == 3
    np.testing.assert_allclose(pixels[0, 0], [200, 0, 50], atol=1e-3)


def test_multi_frame_is_refused_unless_a_frame_is_named(tmp_path: Path) -> None:
    frames = np.stack([ramp() * 0, ramp(), ramp() // 2]).astype(np.uint16)
    path = write_dicom(tmp_path / "m.dcm", frames)
    with pytest.raises(DicomRefused, match=r"multi-frame DICOM \(3 frames\): set data.dicom.frame"):
        decode_dicom(path, max_pixels=LIMIT)
    first, _ = decode_dicom(path, settings=DicomSettings(frame=1), max_pixels=LIMIT)
    single, _ = decode_dicom(write_dicom(tmp_path / "s.dcm", ramp()), max_pixels=LIMIT)
    np.testing.assert_allclose(first, single)
    with pytest.raises(DicomRefused, match=r"data.dicom.frame is 3, but this file has 3 frames"):
        decode_dicom(path, settings=DicomSettings(frame=3), max_pixels=LIMIT)


def test_the_pixel_budget_is_checked_from_the_header_before_any_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Declares 4 frames of 3000 x 3000 16-bit pixels (72 MB) and holds no pixel data at all.
    from pydicom import dcmwrite
    from pydicom.dataset import Dataset

    path = write_dicom(tmp_path / "bomb.dcm", ramp(), pixel_data=False)
    from pydicom import dcmread

    ds: Dataset = dcmread(path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 3000, 3000, 4
    dcmwrite(path, ds)
    monkeypatch.setattr(dicom_module, "_read", _fail_on_pixels(dicom_module._read))
    with pytest.raises(
        DataError, match=r"bomb\.dcm: too many pixels: `rows x columns x frames <= 1,000,000`"
    ):
        check_headers([path], 1_000_000)
    with pytest.raises(DicomRefused, match=r"3000 x 3000 x 4 = 36,000,000 pixels of 16 bits"):
        decode_dicom(path, settings=DicomSettings(frame=0), max_pixels=1_000_000)
    info = inspect_image(path, "bomb.dcm", max_pixels=1_000_000)
    assert info.error.startswith("too many pixels") and info.format == "DICOM"


def _fail_on_pixels(read):  # type: ignore[no-untyped-def]
    def guarded(source, *, pixels):  # type: ignore[no-untyped-def]
        if pixels:
            pytest.fail("the pixel data was read")
        return read(source, pixels=pixels)

    return guarded


def test_an_undecodable_transfer_syntax_names_the_syntax_and_the_package(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate

    path = tmp_path / "video.dcm"
    write_dicom(path, ramp(), transfer_syntax="1.2.840.10008.1.2.4.100", pixel_data=False)
    from pydicom import dcmread, dcmwrite

    ds = dcmread(path)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    dcmwrite(path, ds)
    with pytest.raises(DataError) as err:
        check_headers([path], LIMIT)
    message = str(err.value)
    assert (
        "video.dcm: cannot decode transfer syntax MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100)"
        in message
    )
    assert "PyAV" in message and "\n" not in message


def test_a_syntax_whose_plugin_is_missing_names_that_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydicom.pixels.decoders import base

    class Unavailable:
        is_available = False

    monkeypatch.setattr(base, "get_decoder", lambda uid: Unavailable())
    path = write_dicom(
        tmp_path / "j2k.dcm", ramp(), transfer_syntax="1.2.840.10008.1.2.4.90", pixel_data=False
    )
    with pytest.raises(DicomRefused) as err:
        read_and_check(path)
    assert err.value.reason == (
        "cannot decode transfer syntax JPEG 2000 Image Compression (Lossless Only) "
        "(1.2.840.10008.1.2.4.90): no installed decoder; the package that decodes it: pylibjpeg "
        "with pylibjpeg-openjpeg (or convert the file to an uncompressed transfer syntax)"
    )


def read_and_check(path: Path) -> None:
    dicom_module.check_dicom_header(read_dicom_header(path), LIMIT, DicomSettings())


def test_missing_pixel_data_and_a_damaged_header_are_one_line_each(tmp_path: Path) -> None:
    empty = write_dicom(tmp_path / "sr.dcm", ramp(), pixel_data=False)
    with pytest.raises(DicomRefused, match=r"no pixel data .*transfer syntax Explicit VR Little Endian"):
        decode_dicom(empty, max_pixels=LIMIT)
    damaged = tmp_path / "damaged.dcm"
    damaged.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"\x07" * 20)
    with pytest.raises(DataError) as err:
        check_headers([damaged], LIMIT)
    assert "damaged.dcm:" in str(err.value) and "\n" not in str(err.value)


# ----- pydicom's own files -----------------------------------------------------------------------
def test_every_dicom_file_pydicom_ships_is_read_or_refused_in_one_line() -> None:
    files = shipped_test_files()
    assert len(files) >= 100  # the wheel's set (pydicom 3.0: 167 files with a DICOM name or mark)
    read = refused = 0
    for path in files:
        try:
            pixels, _ = decode_dicom(path, max_pixels=LIMIT)
        except DicomRefused as exc:
            refused += 1
            assert exc.reason and "\n" not in exc.reason, path
            assert "transfer syntax" in exc.reason or "multi-frame" in exc.reason, (path, exc.reason)
            continue
        read += 1
        assert pixels.dtype == np.float32 and pixels.ndim == 3 and pixels.shape[2] == 3, path
        assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 255, path
    assert read >= 60 and refused >= 20, (read, refused)
    for name in ("CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"):
        decode_dicom(next(p for p in files if p.name == name), max_pixels=LIMIT)


def test_transfer_syntax_variants_of_one_image_decode_alike() -> None:
    files = {p.name: p for p in shipped_test_files()}
    reference, _ = decode_dicom(files["MR_small.dcm"], max_pixels=LIMIT)
    for name in (
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ):
        pixels, _ = decode_dicom(files[name], max_pixels=LIMIT)
        np.testing.assert_allclose(pixels, reference, atol=1e-3, err_msg=name)


# ----- everywhere images go in -------------------------------------------------------------------
def test_both_layouts_and_predict_list_dicom_files(tmp_path: Path, synthetic_pair: tuple[Path, Path]) -> None:
    _, dcm = synthetic_pair
    frame = scan_dataset(DataConfig(path=str(dcm)))
    assert len(frame) == 40 and all(p.endswith(".dcm") for p in frame["relpath"])
    # A DICOM file without the suffix counts by its DICM mark.
    plain = tmp_path / "folder" / "IM0001"
    plain.parent.mkdir()
    plain.write_bytes(next((dcm / "negative").glob("*.dcm")).read_bytes())
    assert list_images([plain.parent]) == [plain]
    assert list_images([plain]) == [plain]


def test_validation_hashes_dicom_pixels_and_skips_nothing(synthetic_pair: tuple[Path, Path]) -> None:
    _, dcm = synthetic_pair
    result = validate_images(scan_dataset(DataConfig(path=str(dcm))))
    assert set(result.frame["format"]) == {"DICOM"} and not result.skipped
    assert result.frame["pixel_sha256"].nunique() == 40


def test_a_dicom_split_groups_by_a_salted_patient_hash_and_counts_patients(
    tmp_path: Path, synthetic_pair: tuple[Path, Path]
) -> None:
    _, dcm = synthetic_pair
    ids = identifying_values(dcm.rglob("*.dcm"))
    prepared = prepare_data(DataConfig(path=str(dcm)), seed=0, out_dir=tmp_path / "out", progress=False)
    assert prepared.grouped and prepared.group_source == "dicom PatientID (salted hash)"
    groups = set(prepared.manifest["group"])
    assert len(groups) == 10 and all(g.startswith("patient-") for g in groups)  # 40 images, 4 per patient
    assert prepared.patients is not None and prepared.patients["all"] == 10
    assert prepared.patients["in_several_splits"] == 0
    report = json.loads(prepared.report_path.read_text())
    assert report["leakage"]["patients"] == prepared.patients == report["patients"]
    shared = json.loads((tmp_path / "out" / "shared" / "data_report.json").read_text())
    assert shared["leakage"]["patients"]["all"] == 10 and "group" not in shared
    split_of = prepared.manifest.groupby("group")["split"].nunique()
    assert (split_of == 1).all()
    # The same data gives the same pseudonyms (the salt is kept beside the data) ...
    again = prepare_data(DataConfig(path=str(dcm)), seed=0, out_dir=tmp_path / "out2", progress=False)
    assert set(again.manifest["group"]) == groups
    # ... and no identifying header value is written anywhere.
    assert len(ids) >= 10 * 5
    assert grep_files(tmp_path, ids) == []
    assert grep_files(dcm / ".clot-hpo", ids) == []


def test_a_group_column_still_wins_over_patient_ids(
    tmp_path: Path, synthetic_pair: tuple[Path, Path]
) -> None:
    _, dcm = synthetic_pair
    frame = scan_dataset(DataConfig(path=str(dcm)))
    frame["group"] = pd.Series(["site-a"] * 20 + ["site-b"] * 20, dtype=object)
    from clot_hpo.data.prepare import group_by_patient

    kept, source = group_by_patient(frame, dcm, tmp_path)
    assert source == "column" and set(kept["group"]) == {"site-a", "site-b"}


def test_the_dicom_config_section_is_checked() -> None:
    assert DicomConfig(window=(300, 600)).window == (300.0, 600.0)
    with pytest.raises(ValueError, match="width >= 1"):
        DicomConfig(window=(40, 0))
    with pytest.raises(ValueError):
        DicomConfig(frame=-1)
    assert DicomSettings.from_config(DicomConfig(window=(40, 400), frame=2)) == DicomSettings(
        (40.0, 400.0), 2
    )


def test_read_header_sizes_a_dicom_upload_from_its_header(tmp_path: Path) -> None:
    # The page sizes its memory budget with read_header on the upload's bytes.
    import io

    from clot_hpo.data.limits import read_header

    frames = np.zeros((4, 30, 20), np.uint16)
    data = write_dicom(tmp_path / "m.dcm", frames).read_bytes()
    header = read_header(io.BytesIO(data))
    assert (header.format, header.width, header.height, header.frames) == ("DICOM", 20, 30, 4)
    assert header.pixels == 2400 and header.decode_bytes() >= 30 * 20 * 2 + 30 * 20 * 3 * 4
    assert read_header(tmp_path / "m.dcm") == header


def test_ybr_becomes_the_rgb_it_encodes() -> None:
    files = {p.name: p for p in shipped_test_files()}
    ybr, header = decode_dicom(files["SC_ybr_full_422_uncompressed.dcm"], max_pixels=LIMIT)
    rgb, _ = decode_dicom(files["SC_rgb_rle.dcm"], max_pixels=LIMIT)  # the same picture in RGB
    assert header.photometric == "YBR_FULL_422"
    assert np.abs(ybr - rgb).mean() < 1.0 and np.abs(ybr - rgb).max() <= 6.0  # 4:2:2 chroma


def test_a_voi_lut_sequence_wins_over_any_window(tmp_path: Path) -> None:
    from pydicom import dcmread, dcmwrite
    from pydicom.dataset import Dataset

    path = write_dicom(tmp_path / "lut.dcm", np.arange(16, dtype=np.uint16).reshape(4, 4))
    ds = dcmread(path)
    item = Dataset()
    item.LUTDescriptor = [16, 0, 8]  # 16 entries from stored value 0, 8-bit output
    item.LUTData = [255 - 17 * i for i in range(16)]  # an inverting LUT
    item["LUTData"].VR = "US"
    ds.VOILUTSequence = [item]
    ds.WindowCenter, ds.WindowWidth = 8, 4
    dcmwrite(path, ds)
    pixels, _ = decode_dicom(path, settings=DicomSettings(window=(300, 600)), max_pixels=LIMIT)
    expected = np.array([255 - 17 * i for i in range(16)], dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(pixels[..., 0], expected, atol=1e-3)


def test_synthetic_dicom_takes_the_prevalence_of_the_png_set(tmp_path: Path) -> None:
    # make-synthetic --format dicom --prevalence P writes the same share of positives as the PNGs.
    out = make_synthetic_dicom(tmp_path / "d", n_per_class=10, image_size=16, seed=0, prevalence=0.2)
    assert len(list((out / "positive").glob("*.dcm"))) == 4
    assert len(list((out / "negative").glob("*.dcm"))) == 16


def test_settings_stored_with_a_model_come_back_and_bad_ones_are_none() -> None:
    settings = DicomSettings(window=(300.0, 600.0), frame=2)
    assert settings.as_metadata() == {"window": [300.0, 600.0], "frame": 2}
    assert DicomSettings.from_metadata(json.loads(json.dumps(settings.as_metadata()))) == settings
    assert DicomSettings.from_metadata({"window": None, "frame": None}) == DicomSettings()
    for bad in (None, "window", {"window": [1]}, {"window": ["a", "b"]}, {"frame": "first"}):
        assert DicomSettings.from_metadata(bad) is None, bad


def test_a_model_is_applied_with_its_training_settings_unless_told_otherwise() -> None:
    trained = DicomSettings(window=(300.0, 600.0))
    assert settings_for_model(None, trained) == (trained, None)
    assert settings_for_model(None, None) == (DicomSettings(), None)  # an older model: the defaults
    assert settings_for_model(trained, trained) == (trained, None)
    other = DicomSettings(window=(40.0, 400.0))
    applied, warning = settings_for_model(other, trained)
    assert applied == other, "the user's settings win"
    assert warning is not None
    assert (
        "trained on DICOM pixels with each file's own window, else [center, width] [300.0, 600.0]" in warning
    )
    assert "these settings apply each file's own window, else [center, width] [40.0, 400.0]" in warning
    assert settings_for_model(other, None) == (other, None)  # nothing to compare with
