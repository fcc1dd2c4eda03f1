"""clot-hpo: hyperparameter search and experiment tracking for blood-clot image classifiers.

Public names are imported lazily so that ``import clot_hpo`` does not pull TensorFlow in.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["OptunaHyperParameters", "estimate_vram", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "OptunaHyperParameters":
        from clot_hpo.search.hp import OptunaHyperParameters

        return OptunaHyperParameters
    if name == "estimate_vram":
        from clot_hpo.budget.estimator import estimate_vram

        return estimate_vram
    raise AttributeError(f"module 'clot_hpo' has no attribute {name!r}")
