"""Read a study's trials while workers run it: what the multi-process tests poll.

``optuna.load_study(storage=URL)`` builds a new engine and checks the schema on every call
(about 50 ms of CPU): polled every 0.1-0.2 s while workers train, that took a third of a core
from them on a two-core machine. One storage per URL, kept for the test session, costs about
7 ms a read. ``pool_pre_ping`` replaces the connections a stopped PostgreSQL dropped.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def storage(url: str) -> Any:
    """One ``RDBStorage`` per URL for the session (Optuna imported on first use)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def load_study(url: str, study: str) -> Any:
    """The study named ``study`` in the storage at ``url``."""
    import optuna

    return optuna.load_study(study_name=study, storage=storage(url))


def trials(url: str, study: str) -> list[Any]:
    """The study's trials, or [] while the study does not exist yet or the database is away."""
    try:
        return list(load_study(url, study).get_trials(deepcopy=False))
    except Exception:  # noqa: BLE001 - polling: the database may be stopped on purpose
        return []
