"""The search: Optuna study, per-trial processes, objective, and the KerasTuner-style hyperparameter adapter.

Names are imported on first use (PEP 562): a trial process importing
:mod:`clot_hpo.search.trial.process` or the CLI reading :mod:`clot_hpo.search.storage` does
not pay for Optuna's samplers, KerasTuner or the study loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clot_hpo.util import lazy_exports

if TYPE_CHECKING:  # the one list of exports: lazy_exports reads it (util.lazy_exports)
    from clot_hpo.search.fidelity import fidelity_rung_epochs as fidelity_rung_epochs
    from clot_hpo.search.fidelity import trial_sides as trial_sides
    from clot_hpo.search.hp import OptunaHyperParameters as OptunaHyperParameters
    from clot_hpo.search.hp import optuna_distribution as optuna_distribution
    from clot_hpo.search.ledger import LedgerEntry as LedgerEntry
    from clot_hpo.search.ledger import TrialLedger as TrialLedger
    from clot_hpo.search.objectives import Objective as Objective
    from clot_hpo.search.objectives import get_objective as get_objective
    from clot_hpo.search.pruners import RungPruner as RungPruner
    from clot_hpo.search.pruners import create_pruner as create_pruner
    from clot_hpo.search.pruners import describe_pruner as describe_pruner
    from clot_hpo.search.samplers import VRAM_CONSTRAINT as VRAM_CONSTRAINT
    from clot_hpo.search.samplers import create_sampler as create_sampler
    from clot_hpo.search.storage import open_storage as open_storage
    from clot_hpo.search.storage import redact_url as redact_url
    from clot_hpo.search.study import SearchOutcome as SearchOutcome
    from clot_hpo.search.study import create_or_load_study as create_or_load_study
    from clot_hpo.search.study import run_search as run_search

__getattr__, __dir__ = lazy_exports(globals())
