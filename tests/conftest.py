"""Shared fixtures (seeding, quiet libraries, a tiny synthetic dataset, a study sandbox) and the pyramid.

Every test lives in ``tests/unit/`` or ``tests/integration/`` (tests/README.md): the tests
under ``tests/integration/`` get the ``integration`` and ``slow`` markers here, and a test under
``tests/unit/`` that carries either marker, or a test anywhere else, stops the run at collection.
``tests/unit/conftest.py`` fails a unit test that starts a process or a server.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import REPO

TESTS = Path(__file__).resolve().parent
UNIT, INTEGRATION = TESTS / "unit", TESTS / "integration"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Each test process stays on one core's worth of threads: the suite runs on 2 cores.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the integration tests; refuse a slow test among the unit tests or one outside both."""
    misplaced = []
    for item in items:
        path = Path(item.path).resolve()
        if INTEGRATION in path.parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.slow)
        elif UNIT not in path.parents:
            misplaced.append(f"{item.nodeid}: a test lives in tests/unit/ or tests/integration/")
        elif any(item.iter_markers("slow")) or any(item.iter_markers("integration")):
            misplaced.append(f"{item.nodeid}: marked slow/integration, so it belongs in tests/integration/")
    if misplaced:
        raise pytest.UsageError("see tests/README.md\n" + "\n".join(misplaced))


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
