"""The model registry: promote the best trial, and use a registered model.

* :mod:`clot_hpo.registry.promotion`: :func:`promote` registers the best finished trial of
  an experiment that the Optuna storage vouches for as a new version of
  ``blood-clot-detector`` (with its model file's sha256 and its model card), and moves the
  alias ``champion`` to it only when the gate finds proof that it is better.
  Its steps: :mod:`~clot_hpo.registry.candidates` (metric, direction, ranking),
  :mod:`~clot_hpo.registry.verification` (the Optuna ledger's check, sha256 of the files),
  :mod:`~clot_hpo.registry.artifacts` (downloads), :mod:`~clot_hpo.registry.registration`,
  :mod:`~clot_hpo.registry.decision` (the gate's decision, recorded on the version) and
  :mod:`~clot_hpo.registry.card_writer` (the card's facts); :class:`Ledger` is what the
  search's ledger must offer (tracking and the registry do not import Optuna).
* :mod:`clot_hpo.registry.gate`: the promotion gate (paired test on the test split, floors).
* :mod:`clot_hpo.registry.card`: the model card of a registered version (its facts);
  :mod:`clot_hpo.registry.card_document` lays it out for :mod:`clot_hpo.render`.
* :mod:`clot_hpo.registry.lock`: the promotion lock, across processes and machines.
* :mod:`clot_hpo.registry.models`: resolve a model URI (``models:/blood-clot-detector@champion``
  by default), read how to apply it (threshold and image size, from the model's metadata)
  and load it.
* :mod:`clot_hpo.registry.commands`: ``clot-hpo promote``, ``predict`` and ``evaluate``.

Runs and models are found by the tags of :mod:`clot_hpo.tracking.tags`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clot_hpo.util import lazy_exports

if TYPE_CHECKING:  # the one list of exports: lazy_exports reads it (util.lazy_exports)
    from clot_hpo.registry.commands import evaluate_command as evaluate_command
    from clot_hpo.registry.commands import evaluate_registered_model as evaluate_registered_model
    from clot_hpo.registry.commands import predict_command as predict_command
    from clot_hpo.registry.commands import promote_command as promote_command
    from clot_hpo.registry.gate import GateDecision as GateDecision
    from clot_hpo.registry.gate import GateRule as GateRule
    from clot_hpo.registry.lock import promotion_lock as promotion_lock
    from clot_hpo.registry.models import DEFAULT_ALIAS as DEFAULT_ALIAS
    from clot_hpo.registry.models import DEFAULT_MODEL_NAME as DEFAULT_MODEL_NAME
    from clot_hpo.registry.models import DEFAULT_MODEL_URI as DEFAULT_MODEL_URI
    from clot_hpo.registry.models import ResolvedModel as ResolvedModel
    from clot_hpo.registry.models import load_keras_model as load_keras_model
    from clot_hpo.registry.models import resolve_model as resolve_model
    from clot_hpo.registry.promotion import PromotionResult as PromotionResult
    from clot_hpo.registry.promotion import promote as promote
    from clot_hpo.tracking.study_reader import Ledger as Ledger

__getattr__, __dir__ = lazy_exports(globals())
