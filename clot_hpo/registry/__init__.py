"""The model registry: promote the best trial, and use a registered model.

* :mod:`clot_hpo.registry.promotion`: :func:`promote` registers the best finished trial of
  an experiment as a new version of ``blood-clot-detector`` and moves the alias
  ``champion`` to it only when it beats the current champion, in the direction its study
  recorded.
* :mod:`clot_hpo.registry.models`: resolve a model URI (``models:/blood-clot-detector@champion``
  by default), read how to apply it (threshold and image size, from the model's metadata)
  and load it.
* :mod:`clot_hpo.registry.commands`: ``clot-hpo promote``, ``predict`` and ``evaluate``.

Runs and models are found by the tags of :mod:`clot_hpo.tracking.tags`.
"""

from __future__ import annotations

from clot_hpo.registry.commands import (
    evaluate_command,
    evaluate_registered_model,
    predict_command,
    promote_command,
)
from clot_hpo.registry.models import (
    DEFAULT_ALIAS,
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_URI,
    ResolvedModel,
    load_keras_model,
    resolve_model,
)
from clot_hpo.registry.promotion import PromotionResult, promote

__all__ = [
    "DEFAULT_ALIAS",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_URI",
    "PromotionResult",
    "ResolvedModel",
    "evaluate_command",
    "evaluate_registered_model",
    "load_keras_model",
    "predict_command",
    "promote",
    "promote_command",
    "resolve_model",
]
