"""Per-phase wall time of a trial: laps add up per phase, names are fixed, the process start is known."""

from __future__ import annotations

import time

import pytest

from clot_hpo.search.trial.timing import PHASES, SPAWNED_AT_ENV, PhaseTimer, metric_names, process_started_at


def test_laps_charge_the_time_since_the_previous_mark() -> None:
    timer = PhaseTimer(origin=time.time() - 2.0)
    assert timer.lap("startup") == pytest.approx(2.0, abs=0.5)
    timer.restart(time.time() - 1.0)
    timer.lap("first_epoch")
    timer.add("first_epoch", 0.5)  # e.g. the OOM retry's first epoch
    with timer.phase("evaluate"):
        pass
    attrs = timer.attrs()
    assert list(attrs) == ["time_startup", "time_first_epoch", "time_evaluate"], "phase order, not call order"
    assert attrs["time_first_epoch"] == pytest.approx(1.5, abs=0.3)
    assert metric_names(attrs) == {f"{k}_s": v for k, v in attrs.items()}


def test_unknown_phases_are_refused() -> None:
    with pytest.raises(ValueError, match=r"phase must be one of \[.*'startup'.*\], but got 'warmup'"):
        PhaseTimer().add("warmup", 1.0)


def test_every_phase_is_described() -> None:
    assert all(isinstance(text, str) and text for text in PHASES.values())
    assert list(PHASES)[0] == "startup" and list(PHASES)[-1] == "total"


def test_process_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SPAWNED_AT_ENV, raising=False)
    started = process_started_at()
    assert started is not None and started <= time.time()
    monkeypatch.setenv(SPAWNED_AT_ENV, "1234.5")
    assert process_started_at() == 1234.5
