"""A retry uses a checkpoint only if the Optuna storage vouches for it: each header fact, then end to end.

The tracking server is a mirror that any worker account can write; a checkpoint downloaded
from it must be the file its trial recorded (sha256 by epoch), of the lineage's study, trial
and seed, within the trial's epochs, with the history the trial reported to Optuna.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from clot_hpo.checkpoint_file import TrainingCheckpoint, read_header, save_checkpoint
from clot_hpo.search.ledger import ATTR_CHECKPOINTS, LedgerEntry, entry_of, record_checkpoint
from clot_hpo.search.trial.resume import (
    CheckpointRules,
    ResumePoint,
    Resumer,
    checkpoint_refusal,
    requeue,
)
from clot_hpo.util import file_sha256

RULES = CheckpointRules(study="s", seed=7, epochs=5, history_key="val_auc")
REPORTED = {0: 0.5, 1: 0.625}


def _write(path: Path, *, epoch: int = 2, history: list[float] | None = None, **meta: Any) -> Path:
    facts = {"study": "s", "trial": 3, "seed": 7 + 1, "params": {"lr": 0.01}, **meta}
    values = list(REPORTED.values()) if history is None else history
    checkpoint = TrainingCheckpoint(
        epoch=epoch, model=[np.zeros(2)], optimizer=[], history={"val_auc": values}, meta=facts
    )
    return save_checkpoint(path, checkpoint)


def _refusal(
    path: Path, *, recorded_epoch: int | None = None, reported: dict[int, float] = REPORTED
) -> str | None:
    """Why trial 3 (lineage [1, 3]) may not use ``path``, its sha256 recorded for ``recorded_epoch``."""
    header = read_header(path)
    assert header is not None
    sha = file_sha256(path)
    epoch = header["epoch"] if recorded_epoch is None else recorded_epoch
    entry = LedgerEntry(
        study="s",
        number=3,
        state="FAIL",
        checkpoints=MappingProxyType({epoch: sha}),
        intermediate_values=MappingProxyType(dict(reported)),
    )
    point = ResumePoint(3, path, int(header["epoch"]), downloaded=True)
    return checkpoint_refusal(point, header, sha256=sha, source=entry, lineage_first=1, rules=RULES)


def test_the_checkpoint_its_trial_recorded_is_accepted(tmp_path: Path) -> None:
    assert _refusal(_write(tmp_path / "ok.npz")) is None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"study": "other"}, "names study 'other', but the lineage's is 's'"),
        ({"trial": 9}, "names trial 9, but the lineage's is 3"),
        ({"seed": 7 + 3}, "names seed 10, but the lineage's is 8"),
        ({"epoch": 6, "history": [0.5, 0.625, 0.7, 0.7, 0.7, 0.7]}, "epoch 6 is not within the trial's 1..5"),
        ({"history": [0.5, 0.99]}, "differs from the values trial 3 reported to Optuna"),
        ({"epoch": 3, "history": [0.5, 0.625]}, "its history of val_auc does not cover its 3 epochs"),
    ],
)
def test_each_header_fact_must_match_the_ledger(tmp_path: Path, change: dict[str, Any], why: str) -> None:
    path = _write(tmp_path / "changed.npz", **change)
    refusal = _refusal(path)
    assert refusal is not None and why in refusal


def test_only_a_tail_of_epochs_may_be_unreported(tmp_path: Path) -> None:
    # Killed between writing epoch 3's checkpoint and reporting it: the recorded file is used.
    path = _write(tmp_path / "tail.npz", epoch=3, history=[0.5, 0.625, 0.7])
    assert _refusal(path) is None
    # A gap in what the trial reported is not a kill's trace: refused.
    refusal = _refusal(path, reported={0: 0.5, 2: 0.7})
    assert refusal is not None and "have a gap before epoch 3" in refusal


def test_a_file_its_trial_never_recorded_is_refused(tmp_path: Path) -> None:
    genuine = _write(tmp_path / "genuine.npz")
    planted = _write(tmp_path / "planted.npz", epoch=60, history=[0.99] * 60)
    sha = file_sha256(genuine)
    header = read_header(planted)
    assert header is not None
    entry = LedgerEntry(study="s", number=3, state="FAIL", checkpoints=MappingProxyType({2: sha}))
    point = ResumePoint(3, planted, 60, downloaded=True)
    refusal = checkpoint_refusal(
        point, header, sha256=file_sha256(planted), source=entry, lineage_first=1, rules=RULES
    )
    assert refusal is not None and "is not one trial 3 recorded in the Optuna storage" in refusal
    # A recorded file whose header claims another epoch than the one it was recorded at.
    refusal = _refusal(genuine, recorded_epoch=1)
    assert refusal is not None and "header says epoch 2, but trial 3 recorded this file at epoch 1" in refusal


class _Store:
    """The tracking server's checkpoints: hands out ``planted`` for any trial."""

    enabled = True

    def __init__(self, planted: Path) -> None:
        self.planted = planted

    def download(self, number: int, dest: Path, *, name: str, run_id: str | None) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / name
        target.write_bytes(self.planted.read_bytes())
        return target


class _Console:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, line: str) -> None:
        self.lines.append(line)


def test_a_planted_download_is_refused_and_the_retry_starts_from_scratch(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="s", storage=optuna.storages.RDBStorage("sqlite:///:memory:"))
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    genuine = tmp_path / "genuine.npz"
    save_checkpoint(
        genuine,
        TrainingCheckpoint(
            epoch=1,
            model=[np.zeros(2)],
            optimizer=[],
            history={"val_auc": [0.5]},
            meta={"study": "s", "trial": 0, "seed": 7, "params": trial.params},
        ),
    )
    trial.report(0.5, 0)
    record_checkpoint(trial, 1, file_sha256(genuine))
    study.tell(trial, state=TrialState.FAIL)
    requeue(study, study.trials[0])
    planted = tmp_path / "planted.npz"
    save_checkpoint(
        planted,
        TrainingCheckpoint(
            epoch=60,
            model=[np.ones(2)],
            optimizer=[],
            history={"val_auc": [0.99] * 60},
            meta={"study": "s", "trial": 0, "seed": 7, "params": trial.params},
        ),
    )
    console = _Console()
    resumer = Resumer(
        SimpleNamespace(resume=True, max_resumes=3, preemption_grace_s=25.0),
        checkpoints=_Store(planted),  # type: ignore[arg-type]
        trials_root=tmp_path / "elsewhere",  # another machine: no local checkpoint
        console=console,
        rules=CheckpointRules(study="s", seed=7, epochs=5, history_key="val_auc"),
    )
    retry = study.ask()
    frozen = study.trials[retry.number]
    assert entry_of("s", study.trials[0]).checkpoints == {1: file_sha256(genuine)}
    assert resumer.point(retry, frozen, study.trials) is None
    said = "\n".join(console.lines)
    assert "downloaded from the tracking server was refused: its sha256" in said
    assert "retries trial 0 from scratch (every checkpoint was refused)" in said
    assert retry.user_attrs.get(ATTR_CHECKPOINTS) == {}  # its own, none yet

    # The genuine file, downloaded, is used.
    resumer.checkpoints = _Store(genuine)  # type: ignore[assignment]
    point = resumer.point(retry, frozen, study.trials)
    assert point is not None and (point.trial, point.epoch, point.downloaded) == (0, 1, True)
