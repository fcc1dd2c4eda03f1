"""Experiment configuration: schema, YAML loading, command-line overrides."""

from __future__ import annotations

from clot_hpo.config.loader import load_config, read_yaml, resolve_paths, save_resolved
from clot_hpo.config.schema import (
    BudgetConfig,
    DataConfig,
    EvaluationConfig,
    ExperimentConfig,
    ProgressiveResizeConfig,
    SearchConfig,
    ServeConfig,
    SyntheticConfig,
    TrackingConfig,
    TrainingConfig,
)

__all__ = [
    "BudgetConfig",
    "DataConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "ProgressiveResizeConfig",
    "SearchConfig",
    "ServeConfig",
    "SyntheticConfig",
    "TrackingConfig",
    "TrainingConfig",
    "load_config",
    "read_yaml",
    "resolve_paths",
    "save_resolved",
]
