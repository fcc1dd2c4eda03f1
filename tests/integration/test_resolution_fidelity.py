"""A study at the resolution fidelity with progressive resizing: each epoch at its side, full size last."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tests.support.cli import run_cli

pytestmark = pytest.mark.slow


def test_trials_train_at_their_schedules_sides_and_end_at_full_size(
    sandbox: Path, tiny_dataset: Path
) -> None:
    (sandbox / "fidelity.yaml").write_text(
        (sandbox / "experiments/tiny.yaml")
        .read_text()
        .replace("epochs: 2", "epochs: 3\n  progressive_resize: {enabled: true, start_fraction: 0.5}")
        .replace("pruner: none", "pruner: hyperband\n  fidelity: resolution\n  fidelity_sizes: [0.5]")
    )
    storage = f"sqlite:///{sandbox}/optuna.db"
    result = run_cli(
        "search",
        "fidelity.yaml",
        "--data",
        str(tiny_dataset),
        "--study-name",
        "f",
        "--storage",
        storage,
        "--no-tracking",
        "--n-trials",
        "2",
        cwd=sandbox,
    )
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="f", storage=storage).trials
    assert len(trials) == 2
    for trial in trials:
        side = int(trial.params["image_size"])
        # Two epochs at half the side (the resolution rung; progressive resizing is no smaller
        # there), then full size.
        assert trial.user_attrs["epoch_sides"] == [side // 2, side // 2, side], trial.params
        assert f"epoch 1/3 · {side // 2}px" in result.stdout
        assert f"sizes {side // 2}/{side // 2}/{side}px (planned at {side}px)" in result.stdout
    first = trials[0]  # the first trial at a rung always goes on: it ends at full size
    assert first.state == optuna.trial.TrialState.COMPLETE, first.user_attrs
    assert f"epoch 3/3 · {first.params['image_size']}px" in result.stdout
    assert 0.0 <= float(first.value) <= 1.0  # type: ignore[arg-type]
    assert first.user_attrs["epochs_run"] == 3
