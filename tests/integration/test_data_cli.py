"""``clot-hpo make-synthetic`` and ``clot-hpo validate-data`` as a user runs them.

Every bad input of issue 2 (item 3) runs the real console script in a subprocess and must end
with exit code 2, one line naming the offending entry on stderr, and no traceback. Successful
runs go through ``clot_hpo.cli.main`` in-process (each subprocess costs seconds of imports).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from clot_hpo.cli import main

CLI = Path(sys.executable).with_name("clot-hpo")


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [str(CLI), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def run_ok(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    """Run a command in-process, assert exit code 0, return its stdout."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def assert_bad_input(result: subprocess.CompletedProcess[str], *names: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("clot-hpo: error:")]
    assert len(errors) == 1, result.stderr
    for name in names:
        assert name in errors[0], (name, errors[0])


def _pixels(seed: int, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    big = ndimage.zoom(rng.normal(0, 1, (8, 8, 3)), (size / 8, size / 8, 1), order=1)[:size, :size]
    big = (big - big.min()) / (np.ptp(big) + 1e-9)
    return np.round(30 + 190 * big).astype(np.uint8)


def folders(root: Path, n_pos: int = 10, n_neg: int = 10) -> Path:
    for cls, n, offset in (("positive", n_pos, 0), ("negative", n_neg, 10_000)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(_pixels(offset + i)).save(root / cls / f"{cls[:3]}{i:02d}.png")
    return root


def metadata(root: Path, n_pos: int = 10, n_neg: int = 10, per_group: int = 2) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    with (root / "metadata.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "group"])
        for i in range(n_pos + n_neg):
            rel = f"images/{i:03d}.png"
            Image.fromarray(_pixels(20_000 + i)).save(root / rel)
            writer.writerow([rel, "positive" if i < n_pos else "negative", f"patient{i // per_group}"])
    return root


def test_make_synthetic_then_validate_grouped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "synthetic"
    made = run("make-synthetic", data, "--n-per-class", "24", "--image-size", "32", "--seed", "1")
    assert made.returncode == 0, made.stderr
    assert "synthetic" in made.stdout.lower() and "demonstration only" in made.stdout
    assert (data / "metadata.csv").is_file()

    out = run_ok(capsys, "validate-data", data, "--seed", "3")
    assert "metadata layout, grouped split, seed 3" in out
    for word in ("train", "val", "test", "positive", "negative", "Manifest:", "Digest:", "Leakage:"):
        assert word in out
    manifest = pd.read_csv(data / ".clot-hpo" / "split_manifest.csv")
    assert len(manifest) == 48 and set(manifest.split) == {"train", "val", "test"}
    assert (manifest.groupby("group")["split"].nunique() == 1).all()

    ungrouped = run_ok(
        capsys, "validate-data", data, "--seed", "3", "--group-column", "", "--out", tmp_path / "u"
    )
    assert "ungrouped split" in ungrouped
    assert "group" not in pd.read_csv(tmp_path / "u" / "split_manifest.csv").columns


def test_folders_layout_and_split_determinism(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = folders(tmp_path / "d", 12, 12)
    a = run_ok(capsys, "validate-data", data, "--seed", "5", "--out", tmp_path / "a")
    run_ok(capsys, "validate-data", data, "--seed", "5", "--out", tmp_path / "b")
    run_ok(capsys, "validate-data", data, "--seed", "6", "--out", tmp_path / "c")
    assert "folders layout, ungrouped split" in a
    manifest = {k: (tmp_path / k / "split_manifest.csv").read_text() for k in "abc"}
    assert manifest["a"] == manifest["b"] != manifest["c"]


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    data = folders(tmp_path / "d")
    (data / "positive" / "pos03.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    assert_bad_input(run("validate-data", data), "positive/pos03.png", "--skip-corrupt")


def test_truncated_image_is_named(tmp_path: Path) -> None:
    data = folders(tmp_path / "d")
    target = data / "negative" / "neg07.png"
    target.write_bytes(target.read_bytes()[:-200])
    assert_bad_input(run("validate-data", data), "negative/neg07.png", "truncated")


def test_skip_corrupt_lists_every_skipped_file(tmp_path: Path) -> None:
    # A subprocess: the warnings on stderr are part of what the user sees.
    data = folders(tmp_path / "d", 12, 12)
    bad = [data / "negative" / "neg07.png", data / "positive" / "pos01.png"]
    bad[0].write_bytes(bad[0].read_bytes()[:-200])
    bad[1].write_text("not an image")
    result = run("validate-data", data, "--skip-corrupt")
    assert result.returncode == 0, result.stderr
    assert "Skipped 2 unusable image(s)" in result.stdout
    for path in bad:
        assert str(path.resolve()) in result.stdout
        assert f"skipped {path.resolve()}" in result.stderr
    manifest = pd.read_csv(data / ".clot-hpo" / "split_manifest.csv")
    assert len(manifest) == 22 and "positive/pos01.png" not in set(manifest.relpath)


def test_label_outside_the_set_names_the_row(tmp_path: Path) -> None:
    data = metadata(tmp_path / "d")
    lines = (data / "metadata.csv").read_text().splitlines()
    lines[6] = lines[6].replace("positive", "maybe")
    (data / "metadata.csv").write_text("\n".join(lines) + "\n")
    assert_bad_input(run("validate-data", data), "metadata.csv: row 7: label 'maybe' is not one of")


def test_metadata_row_with_missing_file_is_named(tmp_path: Path) -> None:
    data = metadata(tmp_path / "d")
    (data / "images" / "004.png").unlink()
    assert_bad_input(run("validate-data", data), "row 6", "images/004.png")


def test_empty_class_is_named(tmp_path: Path) -> None:
    data = folders(tmp_path / "d", 10, 0)
    assert_bad_input(run("validate-data", data), "class 'negative'", "has no images")


def test_too_few_images_for_the_split(tmp_path: Path) -> None:
    data = folders(tmp_path / "d", 4, 10)
    assert_bad_input(run("validate-data", data), "too few images", "at least 7 images", "positive: 4")


def test_leakage_report_and_fail_on_leakage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = metadata(tmp_path / "d", 20, 20, per_group=1)
    rows = list(csv.reader((data / "metadata.csv").open()))
    for i in range(8):  # planted exact and near copies, each in its own group
        src = data / f"images/{i:03d}.png"
        if i % 2:
            near = np.clip(np.asarray(Image.open(src)).astype(int) + 5, 0, 255).astype(np.uint8)
            Image.fromarray(near).save(data / f"images/near{i}.png")
            rows.append([f"images/near{i}.png", "positive", f"copy{i}"])
        else:
            (data / f"images/exact{i}.png").write_bytes(src.read_bytes())
            rows.append([f"images/exact{i}.png", "positive", f"copy{i}"])
    with (data / "metadata.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)

    out = run_ok(capsys, "validate-data", data, "--seed", "0")
    manifest = pd.read_csv(data / ".clot-hpo" / "split_manifest.csv").set_index("relpath")["split"]
    crossing = [
        i
        for i in range(8)
        if manifest[f"images/{'near' if i % 2 else 'exact'}{i}.png"] != manifest[f"images/{i:03d}.png"]
    ]
    assert crossing, "the seed put every copy next to its original; pick another seed"
    n_exact = sum(1 for i in crossing if i % 2 == 0)
    n_near = len(crossing) - n_exact
    assert f"{n_exact} exact and {n_near} near-duplicate pair(s) cross splits" in out

    failed = run("validate-data", data, "--seed", "0", "--fail-on-leakage")
    first = crossing[0]
    assert_bad_input(
        failed, "duplicate images cross splits", f"{'near' if first % 2 else 'exact'}{first}.png"
    )


def test_bad_config_and_arguments_exit_2(tmp_path: Path) -> None:
    data = folders(tmp_path / "d")
    assert_bad_input(run("validate-data", data, "--config", tmp_path / "missing.yaml"), "missing.yaml")
    assert_bad_input(run("validate-data", tmp_path / "nowhere"), "nowhere: data folder not found")
    assert_bad_input(run("make-synthetic", tmp_path / "s", "--n-per-class", "1"), "--n-per-class")
    assert_bad_input(run("validate-data", data, "--layout", "metadata"), "metadata.csv", "not found")
