"""The search: Optuna study, per-trial processes, objective, and the KerasTuner-style hyperparameter adapter.

Names are imported on first use (PEP 562): a trial process importing
:mod:`clot_hpo.search.trial.process` or the CLI reading :mod:`clot_hpo.search.storage` does
not pay for Optuna's samplers, KerasTuner or the study loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clot_hpo.util import lazy_exports

if TYPE_CHECKING:
    from clot_hpo.search.fidelity import fidelity_rung_epochs, trial_sides
    from clot_hpo.search.hp import OptunaHyperParameters, optuna_distribution
    from clot_hpo.search.ledger import LedgerEntry, TrialLedger
    from clot_hpo.search.objectives import Objective, get_objective, list_objectives
    from clot_hpo.search.pruners import RungPruner, create_pruner, describe_pruner, list_pruners
    from clot_hpo.search.samplers import VRAM_CONSTRAINT, create_sampler, list_samplers
    from clot_hpo.search.storage import open_storage, redact_url
    from clot_hpo.search.study import SearchOutcome, create_or_load_study, run_search

_WHERE = {
    "fidelity_rung_epochs": "fidelity",
    "trial_sides": "fidelity",
    "OptunaHyperParameters": "hp",
    "optuna_distribution": "hp",
    "TrialLedger": "ledger",
    "LedgerEntry": "ledger",
    "Objective": "objectives",
    "get_objective": "objectives",
    "list_objectives": "objectives",
    "RungPruner": "pruners",
    "create_pruner": "pruners",
    "describe_pruner": "pruners",
    "list_pruners": "pruners",
    "VRAM_CONSTRAINT": "samplers",
    "create_sampler": "samplers",
    "list_samplers": "samplers",
    "open_storage": "storage",
    "redact_url": "storage",
    "SearchOutcome": "study",
    "create_or_load_study": "study",
    "run_search": "study",
}

# Spelled out so type checkers see the exports; tests/unit/test_public_api.py checks that
# it names the same things as _WHERE.
__all__ = [
    "VRAM_CONSTRAINT",
    "LedgerEntry",
    "Objective",
    "OptunaHyperParameters",
    "RungPruner",
    "SearchOutcome",
    "TrialLedger",
    "create_or_load_study",
    "create_pruner",
    "create_sampler",
    "describe_pruner",
    "fidelity_rung_epochs",
    "get_objective",
    "list_objectives",
    "list_pruners",
    "list_samplers",
    "open_storage",
    "optuna_distribution",
    "redact_url",
    "run_search",
    "trial_sides",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals())
