"""Shared fixtures (seeding, quiet libraries, a tiny synthetic dataset, a study sandbox) and the pyramid.

Every test lives in ``tests/unit/`` or ``tests/integration/`` (tests/README.md): the tests
under ``tests/integration/`` get the ``integration`` and ``slow`` markers here, and a test under
``tests/unit/`` that carries either marker, or a test anywhere else, stops the run at collection.
``tests/unit/conftest.py`` fails a unit test that starts a process or a server.

The integration files are ordered longest first, by the per-test times in
``tests/integration/durations.json`` (``CLOT_HPO_RECORD_DURATIONS=path`` writes a fresh one),
so that on ``make test``'s two xdist workers no long file starts last while the other idles.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import copy_project_files

TESTS = Path(__file__).resolve().parent
UNIT, INTEGRATION = TESTS / "unit", TESTS / "integration"
DURATIONS = INTEGRATION / "durations.json"
# Seconds assumed for a test missing from durations.json (about the median integration test).
UNKNOWN_TEST_S = 5.0

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Each test process stays on one core's worth of threads: the suite runs on 2 cores.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark and order the integration tests; refuse a slow unit test or a test outside both folders."""
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
    _longest_files_first(items)


def _duration_key(item_or_report: pytest.Item | pytest.TestReport) -> str:
    """``tests/integration/test_x.py::test_y[param]``: the key in durations.json."""
    path, _, domain = item_or_report.location
    return f"{Path(path).as_posix()}::{domain}"


def _longest_files_first(items: list[pytest.Item]) -> None:
    """Order the integration test files longest first (tests keep their order within a file).

    ``make test`` hands whole files to the two xdist workers (``--dist loadfile``, so a module
    fixture is built once) in this order (``--no-loadscope-reorder``; xdist's own order is the
    most tests first). Longest first leaves the short files to fill whichever worker frees up,
    instead of a long file starting last while the other worker idles. Unit tests keep their place.
    """
    known = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    files: dict[str, list[pytest.Item]] = defaultdict(list)
    others: list[pytest.Item] = []
    for item in items:
        if any(item.iter_markers("integration")):
            files[item.location[0]].append(item)
        else:
            others.append(item)
    cost = {
        name: sum(float(known.get(_duration_key(i), UNKNOWN_TEST_S)) for i in tests)
        for name, tests in files.items()
    }
    ordered = sorted(files, key=lambda name: -cost[name])  # stable: equal costs keep file order
    items[:] = others + [item for name in ordered for item in files[name]]


_recorded: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add up each integration test's setup, call and teardown (for durations.json)."""
    if os.environ.get("CLOT_HPO_RECORD_DURATIONS") and "tests/integration/" in report.nodeid:
        _recorded[_duration_key(report)] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the recorded times where ``CLOT_HPO_RECORD_DURATIONS`` says (xdist: the controller)."""
    out = os.environ.get("CLOT_HPO_RECORD_DURATIONS")
    if out and _recorded and not hasattr(session.config, "workerinput"):
        times = {key: round(seconds, 1) for key, seconds in sorted(_recorded.items())}
        Path(out).write_text(json.dumps(times, indent=1) + "\n")


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
    copy_project_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path
