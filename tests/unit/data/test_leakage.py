"""Exact and near duplicates across splits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clot_hpo.config import DataConfig
from clot_hpo.data.leakage import find_leakage
from clot_hpo.data.scan import scan_dataset
from clot_hpo.data.validate import validate_images


@pytest.fixture
def planted(tmp_path: Path, folders_dataset) -> pd.DataFrame:
    """Ten distinct images per class plus an exact copy, a re-encoded copy and a near copy."""
    root = folders_dataset(tmp_path / "d", 10, 10)
    pos = root / "positive"
    (pos / "copy_of_p000.png").write_bytes((pos / "p000.png").read_bytes())
    Image.open(pos / "p001.png").save(pos / "reencoded_p001.png", compress_level=9)
    near = np.asarray(Image.open(root / "negative" / "n000.png")).astype(int) + 6
    Image.fromarray(np.clip(near, 0, 255).astype(np.uint8)).save(pos / "brighter_n000.jpg", quality=92)
    frame = validate_images(scan_dataset(DataConfig(path=str(root)))).frame
    # Put every original in train and every copy in test.
    frame["split"] = np.where(frame["relpath"].str.contains("copy_|reencoded_|brighter_"), "test", "train")
    return frame


def test_planted_duplicates_are_found(planted: pd.DataFrame) -> None:
    report = find_leakage(planted, max_distance=4)
    exact = {(p.path_a, p.path_b) for p in report.exact_pairs}
    assert exact == {
        ("positive/p000.png", "positive/copy_of_p000.png"),
        ("positive/p001.png", "positive/reencoded_p001.png"),
    }
    near_pairs = [(p.path_a, p.path_b) for p in report.near_pairs]
    assert near_pairs == [("negative/n000.png", "positive/brighter_n000.jpg")]
    near = report.near_pairs[0]
    assert (near.split_a, near.split_b, near.label_a, near.label_b) == ("train", "test", 0, 1)
    assert report.n_exact == 2 and report.n_near == 1 and report.has_leakage
    assert report.by_split_pair() == {"train-test": {"exact": 2, "near": 1}}


def test_threshold_and_same_split_pairs(planted: pd.DataFrame) -> None:
    distance = find_leakage(planted, max_distance=64 // 4).near_pairs
    d = next(p.distance for p in distance if p.path_b == "positive/brighter_n000.jpg")
    assert find_leakage(planted, max_distance=max(d - 1, 0)).n_near == (0 if d > 0 else 1)
    same = planted.assign(split="train")
    report = find_leakage(same, max_distance=4)
    assert not report.has_leakage
    assert report.within_split_exact == 2


def test_report_serialises_and_summarises(planted: pd.DataFrame) -> None:
    report = find_leakage(planted, max_distance=4)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["n_exact"] == 2 and data["n_near"] == 1
    assert data["near_pairs"][0]["path_b"] == "positive/brighter_n000.jpg"
    text = report.summary()
    assert "2 exact and 1 near-duplicate pair(s) cross splits" in text
    assert "positive/copy_of_p000.png (test)" in text and "labels differ" in text
    assert "brighter_n000.jpg" in report.error_message()
    clean = find_leakage(planted[~planted["split"].eq("test")], max_distance=4)
    assert clean.summary().startswith("no duplicates across splits")


def test_near_duplicate_search_scales_to_20k_images() -> None:
    n = 20_000
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    hashes[1] = hashes[0] ^ np.uint64(0b101)  # one planted pair at distance 2
    frame = pd.DataFrame(
        {
            "relpath": [f"{i:05d}.png" for i in range(n)],
            "label": rng.integers(0, 2, n),
            "split": ["train", "test"]
            + list(rng.choice(["train", "val", "test"], n - 2, p=[0.7, 0.15, 0.15])),
            "pixel_sha256": [f"{i:064x}" for i in range(n)],
            "phash": [f"{int(h):016x}" for h in hashes],
        }
    )
    start = time.perf_counter()
    report = find_leakage(frame, max_distance=4)
    elapsed = time.perf_counter() - start
    assert [(p.path_a, p.path_b, p.distance) for p in report.near_pairs] == [("00000.png", "00001.png", 2)]
    assert elapsed < 15, f"near-duplicate search took {elapsed:.1f} s for {n} images"
