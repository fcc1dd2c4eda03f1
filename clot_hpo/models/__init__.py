"""Backbone registry and KerasTuner HyperModels; no Optuna, no MLflow here."""

from __future__ import annotations

from clot_hpo.models.backbones import (
    Backbone,
    create_backbone,
    create_backbone_with_info,
    list_backbones,
)

__all__ = ["Backbone", "create_backbone", "create_backbone_with_info", "list_backbones"]
