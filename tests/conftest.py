"""Shared fixtures: seeding, quiet libraries, a tiny synthetic dataset, a study sandbox."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import REPO

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Each test process stays on one core's worth of threads: the suite runs on 2 cores.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same random state."""
    random.seed(1234)
    np.random.seed(1234)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 images per class at 32 px in the Kaggle layout, made once per session."""
    from clot_hpo.data.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("data") / "tiny"
    make_synthetic(out, n_per_class=40, image_size=32, seed=3)
    return out


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding its own ``mlruns/`` and a copy of ``experiments/``."""
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    shutil.copytree(REPO / "search_spaces", tmp_path / "search_spaces")
    monkeypatch.chdir(tmp_path)
    return tmp_path
