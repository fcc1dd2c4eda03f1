"""prepare_data end to end: manifest, digest, report, synthetic fallback, leakage gate."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from clot_hpo.config import DataConfig, SyntheticConfig
from clot_hpo.data import prepare_data
from clot_hpo.data import validate as validate_mod
from clot_hpo.errors import DataError


def test_prepare_writes_manifest_report_and_counts(tmp_path: Path, metadata_dataset) -> None:
    root = metadata_dataset(tmp_path / "d", 20, 20, per_group=2)
    out = tmp_path / "out"
    prepared = prepare_data(DataConfig(path=str(root)), seed=3, out_dir=out, progress=False)

    assert prepared.manifest_path == out / "split_manifest.csv"
    saved = pd.read_csv(prepared.manifest_path)
    assert list(saved.columns) == ["relpath", "label", "split", "group", "sha256"]
    assert saved["relpath"].tolist() == prepared.manifest["relpath"].tolist()
    assert list(prepared.manifest.columns) == ["path", "relpath", "label", "group", "split", "sha256"]
    # The key of an image in predictions files: its content hash, never its path.
    assert saved["sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert prepared.grouped and (prepared.manifest.groupby("group")["split"].nunique() == 1).all()
    assert sum(sum(c.values()) for c in prepared.counts.values()) == 40
    assert prepared.counts["train"]["positive"] == int(((saved.split == "train") & (saved.label == 1)).sum())
    assert len(prepared.paths("val")) == len(prepared.labels("val")) == sum(prepared.counts["val"].values())

    report = json.loads(prepared.report_path.read_text())
    assert report["digest"] == prepared.digest and report["counts"] == prepared.counts
    assert report["layout"] == "metadata" and report["leakage"]["has_leakage"] is False
    assert (out / "image_index.csv").is_file()


def test_same_data_same_digest_and_split_and_changes_are_seen(
    tmp_path: Path, folders_dataset, pixels, save
) -> None:
    root = folders_dataset(tmp_path / "d", 12, 12)
    cfg = DataConfig(path=str(root))
    a = prepare_data(cfg, seed=1, out_dir=tmp_path / "a", progress=False)
    b = prepare_data(cfg, seed=1, out_dir=tmp_path / "b", progress=False)
    c = prepare_data(cfg, seed=2, out_dir=tmp_path / "c", progress=False)
    assert a.digest == b.digest == c.digest  # the digest describes the data, not the split
    assert a.manifest["split"].tolist() == b.manifest["split"].tolist()
    assert a.manifest["split"].tolist() != c.manifest["split"].tolist()
    assert not a.grouped and "group" not in pd.read_csv(a.manifest_path).columns

    save(root / "positive" / "p000.png", pixels(4242))  # content changes
    changed = prepare_data(cfg, seed=1, out_dir=tmp_path / "a", progress=False).digest
    assert changed != a.digest
    (root / "positive" / "p001.png").rename(root / "negative" / "p001.png")  # a label changes
    moved = prepare_data(cfg, seed=1, out_dir=tmp_path / "a", progress=False).digest
    assert moved not in (a.digest, changed)


def test_rerun_uses_the_hash_cache(tmp_path: Path, folders_dataset, monkeypatch) -> None:
    root = folders_dataset(tmp_path / "d", 20, 20)
    cfg = DataConfig(path=str(root))
    first = prepare_data(cfg, seed=0, out_dir=tmp_path / "out", progress=False)
    monkeypatch.setattr(validate_mod, "inspect_image", lambda *a, **k: pytest.fail("cache not used"))
    second = prepare_data(cfg, seed=0, out_dir=tmp_path / "out", progress=False)
    assert second.digest == first.digest


def test_skipped_files_are_listed_and_can_empty_a_class(tmp_path: Path, folders_dataset) -> None:
    root = folders_dataset(tmp_path / "d", 10, 10)
    (root / "positive" / "p003.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cfg = DataConfig(path=str(root), skip_corrupt=True)
    prepared = prepare_data(cfg, seed=0, out_dir=tmp_path / "out", progress=False)
    assert [Path(p).name for p, _ in prepared.skipped] == ["p003.png"]
    assert "positive/p003.png" not in set(prepared.manifest["relpath"])
    assert json.loads(prepared.report_path.read_text())["skipped"][0]["path"].endswith("p003.png")

    small = folders_dataset(tmp_path / "s", 2, 10)
    for f in (small / "positive").iterdir():
        f.write_text("x")
    with pytest.raises(DataError, match="class 'positive' .*has no images"):
        prepare_data(
            DataConfig(path=str(small), skip_corrupt=True), seed=0, out_dir=tmp_path / "o2", progress=False
        )


def test_fail_on_leakage_lists_pairs_but_still_saves_the_report(tmp_path: Path, folders_dataset) -> None:
    root = folders_dataset(tmp_path / "d", 30, 30)
    for i in range(10):  # ten exact copies: some surely land in another split than their original
        (root / "negative" / f"dup{i}.png").write_bytes((root / "negative" / f"n{i:03d}.png").read_bytes())
    cfg = DataConfig(path=str(root))
    prepared = prepare_data(cfg, seed=0, out_dir=tmp_path / "out", progress=False)
    split = prepared.manifest.set_index("relpath")["split"]
    crossing = {
        f"negative/dup{i}.png"
        for i in range(10)
        if split[f"negative/dup{i}.png"] != split[f"negative/n{i:03d}.png"]
    }
    assert crossing
    assert prepared.leakage.n_exact == len(crossing)
    assert {p.path_a if "dup" in p.path_a else p.path_b for p in prepared.leakage.exact_pairs} == crossing
    assert prepared.leakage.n_near == 0

    cfg_fail = DataConfig(path=str(root), fail_on_leakage=True)
    with pytest.raises(DataError, match=r"duplicate images cross splits \(\d+ exact.*dup\d\.png"):
        prepare_data(cfg_fail, seed=0, out_dir=tmp_path / "out2", progress=False)
    assert (tmp_path / "out2" / "data_report.json").is_file()


def test_missing_folder_generates_synthetic_data_when_configured(tmp_path: Path, caplog) -> None:
    path = tmp_path / "synthetic"
    cfg = DataConfig(path=str(path), synthetic=SyntheticConfig(n_per_class=12, image_size=32))
    with caplog.at_level(logging.INFO):
        prepared = prepare_data(cfg, seed=5, out_dir=tmp_path / "out", progress=False)
    assert (path / "metadata.csv").is_file() and prepared.layout == "metadata" and prepared.grouped
    assert sum(sum(c.values()) for c in prepared.counts.values()) == 24
    assert any("synthetic" in r.message and "demonstration only" in r.message for r in caplog.records)


def test_missing_folder_without_synthetic_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope: data folder not found .*make-synthetic"):
        prepare_data(DataConfig(path=str(tmp_path / "nope")), seed=0, out_dir=tmp_path / "o", progress=False)


def test_a_set_from_an_older_generator_is_replaced_and_other_data_is_kept(tmp_path: Path) -> None:
    import json

    from clot_hpo.data.synthetic import MARKER

    path = tmp_path / "synthetic"
    easy = DataConfig(path=str(path), synthetic=SyntheticConfig(n_per_class=24, image_size=32))
    prepare_data(easy, seed=1, out_dir=tmp_path / "a", progress=False)
    marker = json.loads((path / MARKER).read_text())
    # Other parameters (a set made by hand, or one another worker is writing): used as it is.
    hard = DataConfig(
        path=str(path), synthetic=SyntheticConfig(n_per_class=24, image_size=32, difficulty="hard")
    )
    prepare_data(hard, seed=1, out_dir=tmp_path / "b", progress=False)
    assert json.loads((path / MARKER).read_text()) == marker
    # Written by generator version 1: replaced.
    (path / MARKER).write_text(json.dumps({**marker, "version": 1}))
    prepare_data(hard, seed=1, out_dir=tmp_path / "c", progress=False)
    assert json.loads((path / MARKER).read_text())["difficulty"] == 1.0
    assert json.loads((path / MARKER).read_text())["version"] == marker["version"]
    (path / MARKER).unlink()  # now it is someone's data: kept as it is
    before = sorted(p.name for p in path.rglob("*.png"))
    prepare_data(easy, seed=1, out_dir=tmp_path / "d", progress=False)
    assert not (path / MARKER).exists() and sorted(p.name for p in path.rglob("*.png")) == before
