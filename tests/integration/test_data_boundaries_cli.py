"""Issue 12: the data layer's refusals as a user meets them: exit 2, one line naming the entry.

Each test runs the real command line in a fresh process (tests/support/cli.py) and reproduces
one finding of the review; none loads a model or trains.
"""

from __future__ import annotations

import csv
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.cli import run_cli
from tests.unit.data.test_boundaries import bomb_png, dicom_bytes


def assert_refused(result: subprocess.CompletedProcess[str], *names: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("clot-hpo: error:")]
    assert len(errors) == 1, result.stderr
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def folders(root: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("positive", "negative"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_etc_passwd_row_is_refused_with_skip_corrupt(tmp_path: Path) -> None:
    data = folders(tmp_path / "d")
    depth = "../" * len(data.resolve().parts)
    with (data / "metadata.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label"])
        writer.writerows([[f"positive/{i}.png", "positive"] for i in range(8)])
        writer.writerows([[f"negative/{i}.png", "negative"] for i in range(8)])
        writer.writerow([f"{depth}etc/passwd", "negative"])
    line = assert_refused(run_cli("validate-data", str(data), "--skip-corrupt"), "row 18", "etc/passwd")
    assert "outside the data folder" in line and "--allow-outside-root" in line


def test_a_dicom_file_without_an_image_is_refused_by_name(tmp_path: Path) -> None:
    data = folders(tmp_path / "d")
    (data / "positive" / "study.dcm").write_bytes(dicom_bytes())
    assert_refused(
        run_cli("validate-data", str(data)),
        "positive/study.dcm",
        "no pixel data",
    )


def test_non_utf8_name_is_refused_by_name(tmp_path: Path) -> None:
    data = folders(tmp_path / "d")
    Image.new("RGB", (24, 24)).save(data / "negative" / os.fsdecode(b"m\xfcller.png"))
    assert_refused(run_cli("validate-data", str(data)), r"m\xfcller.png", "not valid UTF-8")


def run_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> subprocess.CompletedProcess[str]:
    """``clot-hpo ARGS`` through ``cli.main`` in this process.

    For ``predict`` and ``evaluate``, which import TensorFlow before they start (20 s in a
    fresh process; the test session has it loaded already). The CLI's global warning filters
    and environment are restored afterwards.
    """
    from clot_hpo.cli import main

    monkeypatch.setenv("PYTHONWARNINGS", "")
    capsys.readouterr()
    with warnings.catch_warnings():
        code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def test_bomb_is_refused_by_validate_data_and_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = folders(tmp_path / "d")
    bomb = bomb_png(data / "negative" / "bomb.png", 12_000, 12_000)
    assert_refused(run_cli("validate-data", str(data)), "negative/bomb.png", "too many pixels")
    # predict refuses it from its header before it opens the tracking store or the model.
    store = tmp_path / "nowhere.db"
    result = run_in_process(capsys, monkeypatch, "predict", "--tracking-uri", f"sqlite:///{store}", str(bomb))
    assert_refused(result, "bomb.png", "too many pixels")
    assert not store.exists()


def test_evaluate_validates_its_data_before_loading_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = folders(tmp_path / "d")
    bad = data / "positive" / "3.png"
    bad.write_bytes(bad.read_bytes()[:-40])
    store = tmp_path / "nowhere.db"
    args = ("evaluate", "--tracking-uri", f"sqlite:///{store}", "--data", str(data))
    assert_refused(run_in_process(capsys, monkeypatch, *args), "positive/3.png", "truncated")
    assert not store.exists()


@pytest.mark.parametrize("name", ["../../escaped"])
def test_study_name_cannot_leave_mlruns(tmp_path: Path, name: str) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (work / "exp.yaml").write_text("name: x\n")
    result = run_cli("search", "exp.yaml", "--study-name", name, "--no-tracking", cwd=work)
    assert_refused(result, "search.study_name", name)
    assert not (tmp_path / "escaped").exists() and not (work / "mlruns").exists()


def test_allow_outside_root_lets_an_outside_image_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = folders(tmp_path / "d")
    folders(tmp_path / "other", 1)
    with (data / "metadata.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label"])
        writer.writerows([[f"positive/{i}.png", "positive"] for i in range(8)])
        writer.writerows([[f"negative/{i}.png", "negative"] for i in range(8)])
        writer.writerow(["../other/positive/0.png", "positive"])
    out = tmp_path / "out"
    refused = run_in_process(capsys, monkeypatch, "validate-data", str(data), "--out", str(out))
    assert_refused(refused, "row 18", "../other/positive/0.png")
    allowed = run_in_process(
        capsys, monkeypatch, "validate-data", str(data), "--out", str(out), "--allow-outside-root"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "other/positive/0.png" in (out / "split_manifest.csv").read_text()
