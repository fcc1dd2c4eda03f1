"""A study under a 1 GiB VRAM budget: infeasible trials are reshaped or pruned before training.

A trial plans its budget before it decodes its images, so the pruned trial never decodes them at
its side (when it did, 80 images at 4096 px took about 9 GB and a minute).
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.support.cli import run_cli

pytestmark = pytest.mark.slow

SPACE = """backbone: tiny_cnn
parameters:
  image_size: {type: categorical, choices: [32, 256, 1536]}
  batch_size: {type: categorical, choices: [16, 512]}
  learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""


def test_infeasible_configurations_never_train_at_their_infeasible_size(
    sandbox: Path, tiny_dataset: Path
) -> None:
    (sandbox / "space.yaml").write_text(SPACE)
    (sandbox / "vram.yaml").write_text(
        "name: vram\ntraining: {epochs: 1, weights: none}\n"
        "search: {backbones: [tiny_cnn], search_spaces: {tiny_cnn: space.yaml}, pruner: none}\n"
        "budget: {vram_gb: 1, mixed_precision: 'off'}\n"
    )
    storage = f"sqlite:///{sandbox}/optuna.db"
    study = optuna.create_study(study_name="vram", storage=storage, direction="maximize")
    study.enqueue_trial({"image_size": 32, "batch_size": 16})  # fits
    study.enqueue_trial({"image_size": 256, "batch_size": 512})  # fits only as a smaller batch
    study.enqueue_trial({"image_size": 1536, "batch_size": 16})  # fits at no batch at all
    result = run_cli(
        "search",
        "vram.yaml",
        "--data",
        str(tiny_dataset),
        "--storage",
        storage,
        "--no-tracking",
        "--n-trials",
        "3",
        cwd=sandbox,
    )
    assert result.returncode == 0, result.stderr
    fits, reshaped, pruned = optuna.load_study(study_name="vram", storage=storage).trials

    assert fits.state == TrialState.COMPLETE
    assert fits.user_attrs["budget_action"] == "run"
    assert fits.user_attrs["batch_size_run"] == 16

    assert reshaped.state == TrialState.COMPLETE
    assert reshaped.user_attrs["budget_action"] == "reshape"
    run_batch = reshaped.user_attrs["batch_size_run"]
    steps = reshaped.user_attrs["accumulation_steps_run"]
    assert run_batch < 512 and steps > 1 and run_batch * steps >= 512, (run_batch, steps)
    assert reshaped.user_attrs["budget_reason"]

    assert pruned.state == TrialState.PRUNED
    assert pruned.user_attrs["budget_action"] == "prune"
    assert "VRAM budget" in pruned.user_attrs["prune_reason"]
    assert pruned.user_attrs.get("epochs_run", 0) == 0, "an infeasible trial was trained"
    assert pruned.constraints["vram"] > 0 >= fits.constraints["vram"]
    for trial in (fits, reshaped, pruned):
        assert "from budget.vram_gb" in trial.user_attrs["budget_source"]
    cache = sandbox / "mlruns/studies/vram/cache"
    assert {p.name.split("-")[1] for p in cache.glob("*.npy")} == {"32px", "256px"}, (
        "the pruned trial decoded its images"
    )
