"""Each completed trial logs its failure gallery under ``explanations/``, unless switched off.

A one-trial study (tiny CNN, 32 px, one epoch) through ``clot-hpo search`` into a SQLite store:
with the default config the trial's run has one overlay figure per kind. The switch
(``evaluation.explanations: false``: none, so no image leaves the machine that way) is asserted
on the DICOM study's trial, in tests/integration/test_dicom_study.py, rather than by a second
study here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from clot_hpo.explain import GALLERY_KINDS
from tests.support.cli import run_cli

pytestmark = pytest.mark.slow

SPACE = """backbone: tiny_cnn
parameters:
  image_size: {type: categorical, choices: [32]}
  batch_size: {type: categorical, choices: [16]}
"""


def _study(work: Path, data: Path, name: str) -> list[str]:
    (work / "space.yaml").write_text(SPACE)
    (work / f"{name}.yaml").write_text(
        f"name: {name}\ntraining: {{epochs: 1, weights: none}}\n"
        "search: {backbones: [tiny_cnn], search_spaces: {tiny_cnn: space.yaml}, pruner: none, n_trials: 1}\n"
        "evaluation: {bootstrap_samples: 100}\n"
        f"tracking: {{uri: 'sqlite:///{work}/mlflow.db', artifact_root: '{work}/artifacts',"
        " log_model: false}\n"
    )
    result = run_cli(
        "search", f"{name}.yaml", "--data", str(data), "--storage", f"sqlite:///{work}/optuna.db", cwd=work
    )
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    experiment = client.get_experiment_by_name(name)
    trial = next(r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == "trial-0")
    return [item.path for item in client.list_artifacts(trial.info.run_id, "explanations")]


def test_a_trial_logs_one_gallery_figure_per_kind(tiny_dataset: Path, tmp_path: Path) -> None:
    assert sorted(_study(tmp_path, tiny_dataset, "gallery-on")) == sorted(
        f"explanations/{kind}.png" for kind in GALLERY_KINDS
    )
