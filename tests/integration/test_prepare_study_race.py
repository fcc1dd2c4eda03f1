"""Workers starting together on an empty PostgreSQL study enqueue its defaults trials once.

Without the study lock each process sees no trial yet and enqueues the defaults (two trials,
one per backbone) itself: four processes left up to eight. Every process starts at the same
instant once all have imported (``tests/support/together.py``), and no read of the study's
trials returns before a common moment a few seconds later (a busy database): without the lock
all of them have seen it empty by then.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import together
from tests.support.postgres import PostgresServer, postgres_session  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

ROUNDS, PER_ROUND = 2, 4
# From the common start to the moment reads return: every process has looked at the study.
RELEASE_AFTER_S = 6.0

_OPEN_AT_ONCE = (
    together.CHILD
    + r"""
import sys, time
import optuna
from clot_hpo.config import load_config
from clot_hpo.search.study import open_study, resolve_spaces

read_trials = optuna.Study.get_trials
def slow_read(self, *args, **kwargs):
    # A busy database: no read returns before `release_at`, so every process that looks before
    # then has seen the study as it was, empty unless another enqueued under the lock meanwhile.
    trials = read_trials(self, *args, **kwargs)
    time.sleep(max(0.0, float(release_at) - time.time()))
    return trials
optuna.Study.get_trials = slow_read

config_path, storage, folder, name, release_after = sys.argv[1:]
config = load_config(config_path, {"search.storage": storage})
spaces = resolve_spaces(config)
start_at = wait_for_go(folder, name)  # every process imported: go together
release_at = start_at + float(release_after)
study, enqueued = open_study(config, spaces)
print(len(enqueued)); import sys as _s; print(time.time() - float(start_at), file=_s.stderr)
"""
)


@pytest.mark.timeout(240)
def test_workers_starting_together_enqueue_the_defaults_once(
    postgres_session: PostgresServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    import optuna

    config = tmp_path / "two-backbones.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "race",
                "data": {"path": str(tmp_path / "unused")},
                "search": {"backbones": ["tiny_cnn", "resnet50"], "n_trials": 4},
            }
        )
    )
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    jobs = []
    for r in range(ROUNDS):
        storage = postgres_session.create_database(f"defaults_race_{r}")
        # Optuna's tables exist already (as in a database that held other studies): the workers
        # race on the study, not on the schema, whose creation is serialized by its own lock.
        optuna.storages.RDBStorage(storage).engine.dispose()
        for _ in range(PER_ROUND):
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _OPEN_AT_ONCE,
                    str(config),
                    storage,
                    str(barrier),
                    f"{r}-{len(jobs)}",
                    str(RELEASE_AFTER_S),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
            )
            jobs.append((r, storage, proc))
    together.release(barrier, ROUNDS * PER_ROUND, [proc for _, _, proc in jobs])
    enqueued: dict[int, list[int]] = {}
    for r, _, proc in jobs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"round {r}: {err.strip().splitlines()[-1:]}"
        enqueued.setdefault(r, []).append(int(out.strip().splitlines()[-1]))
    for r, storage, _ in jobs[::PER_ROUND]:
        print(r, enqueued[r])
        assert sorted(enqueued[r]) == [0] * (PER_ROUND - 1) + [2], f"round {r}: {enqueued[r]}"
        study = optuna.load_study(study_name="race", storage=storage)
        trials = study.get_trials(deepcopy=False)
        assert [t.state.name for t in trials] == ["WAITING", "WAITING"], f"round {r}"
        assert {t.system_attrs["fixed_params"]["backbone"] for t in trials} == {"tiny_cnn", "resnet50"}
        assert study.user_attrs["defaults_enqueued"] == 2
