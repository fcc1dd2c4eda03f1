"""Issue 12, item 6: the pixel limit and the formats outside validation (predict, evaluate).

``predict`` decoded a 16000 x 16000 PNG that ``validate-data`` refuses, and ``evaluate`` did
not validate its folder at all. Nothing here loads a model or TensorFlow: every refusal
happens before either.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clot_hpo.data import pipeline
from clot_hpo.data.limits import Header, check_headers, decode_parallelism
from clot_hpo.data.pipeline import list_images, load_image_batch
from clot_hpo.errors import DataError
from clot_hpo.evaluate.holdout import load_labelled_folder
from tests.unit.data.test_boundaries import bomb_png, dicom_bytes


def test_predict_refuses_a_bomb_from_its_header_before_decoding(
    tmp_path: Path, pixels, save, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = save(tmp_path / "ok.png", pixels(1, 40))
    bomb = bomb_png(tmp_path / "huge.png", 16_000, 16_000)

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(pipeline, "_decode_resize", no_decoding)
    with pytest.raises(DataError, match=r"huge\.png: too many pixels") as err:
        load_image_batch([good, bomb], 32)
    assert "ok.png" not in str(err.value)


def test_predict_takes_the_configured_limit(tmp_path: Path, pixels, save, monkeypatch) -> None:
    path = save(tmp_path / "a.png", pixels(1, 40))
    monkeypatch.setattr(pipeline, "_decode_resize", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(DataError, match=r"a\.png: too many pixels.*1,000.*40 x 40"):
        load_image_batch([path], 32, max_pixels=1_000)


def test_decoders_in_flight_are_bounded_by_memory_not_only_cores() -> None:
    scans = [Header(4_000, 4_000, "RGB", "PNG")] * 10  # ~144 MB each while decoded
    assert decode_parallelism(scans, 2**30, cores=16) == 7
    assert decode_parallelism(scans, 2**20, cores=16) == 1  # one at a time, never zero
    assert decode_parallelism([Header(64, 64, "L", "PNG")], 2**30, cores=4) == 4


def test_predict_lists_dicom_files_and_names_one_without_an_image(tmp_path: Path, pixels, save) -> None:
    save(tmp_path / "folder" / "a.png", pixels(1, 40))
    (tmp_path / "folder" / "b.dcm").write_bytes(dicom_bytes())
    files = list_images([tmp_path / "folder"])
    assert [f.name for f in files] == ["a.png", "b.dcm"]
    with pytest.raises(DataError, match=r"b\.dcm: no pixel data"):
        check_headers(files, 1_000_000)
    (tmp_path / "c.dcm").write_bytes(dicom_bytes())
    assert list_images([tmp_path / "c.dcm"]) == [tmp_path / "c.dcm"]


def test_predict_names_a_non_utf8_file(tmp_path: Path, pixels, save) -> None:
    save(tmp_path / "folder" / os.fsdecode(b"r\xf6ntgen.png"), pixels(1, 40))
    with pytest.raises(DataError, match=r"r\\xf6ntgen\.png.*not valid UTF-8"):
        list_images([tmp_path / "folder"])


@pytest.mark.parametrize("damage", ["truncated", "bomb"])
def test_evaluate_validates_its_folder(tmp_path: Path, folders_dataset, damage: str) -> None:
    root = folders_dataset(tmp_path / "d", 4, 4)
    target = root / "negative" / "n002.png"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:-60])
    else:
        bomb_png(target, 12_000, 12_000)
    expected = "truncated" if damage == "truncated" else "too many pixels"
    with pytest.raises(DataError, match=rf"negative/n002\.png: {expected}"):
        load_labelled_folder(root)


def test_the_cli_does_not_silence_pillows_bomb_warning(tmp_path: Path, monkeypatch) -> None:
    import warnings

    from PIL import Image

    from clot_hpo.cli import main

    monkeypatch.setenv("PYTHONWARNINGS", "")
    with warnings.catch_warnings():
        assert main(["validate-data", str(tmp_path / "missing")]) == 2  # sets up warnings, then fails
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn(
                "Image size (100000000 pixels) exceeds limit of 89478485 pixels, could be decompression "
                "bomb DOS attack.",
                Image.DecompressionBombWarning,
                stacklevel=1,
            )
            warnings.warn("some library's deprecation", DeprecationWarning, stacklevel=1)
        assert [type(w.message) for w in caught] == [Image.DecompressionBombWarning]
        # Trial processes inherit the choice through the environment.
        assert os.environ["PYTHONWARNINGS"].startswith("ignore,default:Image size")


def test_training_decodes_within_the_configured_limit(tmp_path: Path, pixels, save, monkeypatch) -> None:
    from clot_hpo.data.cache import DecodedSplits

    paths = [save(tmp_path / f"{i}.png", pixels(i, 40)) for i in range(2)]
    manifest = tmp_path / "trial_manifest.csv"
    manifest.write_text("path,label,split\n" + "".join(f"{p},{i},train\n" for i, p in enumerate(paths)))
    monkeypatch.setattr(pipeline, "_decode_resize", lambda *a, **k: pytest.fail("decoded"))
    splits = DecodedSplits(manifest, image_size=32, folder=tmp_path / "cache", max_pixels=1_000)
    with pytest.raises(DataError, match=r"0\.png: too many pixels"):
        splits.images("train")


def test_the_file_pipeline_checks_headers_before_decoding(tmp_path: Path, monkeypatch) -> None:
    bomb = bomb_png(tmp_path / "huge.png", 12_000, 12_000)
    monkeypatch.setattr(pipeline, "_decode_resize", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(DataError, match=r"huge\.png: too many pixels"):
        pipeline.make_dataset([bomb], [1], image_size=32, batch_size=1, shuffle=False, seed=0)
