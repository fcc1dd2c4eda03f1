"""The backbone and optimizer catalogues and the KerasTuner HyperModel; no Optuna, no MLflow.

Importing this package does not import Keras (the catalogues load it in their builders), so
the config schema and the VRAM estimator can read backbone and optimizer names without it.
"""

from __future__ import annotations

from clot_hpo.models.backbones import (
    BACKBONES,
    IMAGENET_UNAVAILABLE,
    Backbone,
    BackboneSpec,
    create_backbone,
    create_backbone_with_info,
    get_backbone_spec,
    list_backbones,
)
from clot_hpo.models.optimizers import (
    OPTIMIZERS,
    OptimizerSettings,
    OptimizerSpec,
    get_optimizer_spec,
    list_optimizers,
)

__all__ = [
    "BACKBONES",
    "IMAGENET_UNAVAILABLE",
    "OPTIMIZERS",
    "Backbone",
    "BackboneSpec",
    "OptimizerSettings",
    "OptimizerSpec",
    "create_backbone",
    "create_backbone_with_info",
    "get_backbone_spec",
    "get_optimizer_spec",
    "list_backbones",
    "list_optimizers",
]
