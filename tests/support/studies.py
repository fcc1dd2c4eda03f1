"""Read a study's trials while workers run it: what the multi-process tests poll.

``optuna.load_study(storage=URL)`` builds a new engine and checks the schema on every call
(about 50 ms of CPU): polled every 0.1-0.2 s while workers train, that took a third of a core
from them on a two-core machine. One storage per URL, kept for the test session, costs about
7 ms a read. ``pool_pre_ping`` replaces the connections a stopped PostgreSQL dropped.

A poller must not write to a storage the study process is still creating: Optuna's
``RDBStorage`` creates the tables, and even with ``skip_table_creation`` inserts its
``version_info`` row and Alembic stamp when they are missing, racing the study process's own
(the likely cause of a CI study process that died before creating its study while the test
waited out its deadline). So the study's row is looked for with plain SQL first, and the
Optuna storage is opened only once it exists, when the study process has written all of those.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _engine(url: str) -> Any:
    """A read-only engine for ``url`` (SQLite opened with ``mode=ro``: a missing file stays missing)."""
    import sqlalchemy

    if url.startswith("sqlite:///"):
        url = f"sqlite:///file:{url.removeprefix('sqlite:///')}?mode=ro&uri=true"
    return sqlalchemy.create_engine(url, pool_pre_ping=True)


def study_exists(url: str, study: str) -> bool:
    """Whether the storage at ``url`` holds the study ``study`` yet; nothing is created or written."""
    import sqlalchemy

    try:
        with _engine(url).connect() as conn:
            query = sqlalchemy.text("SELECT 1 FROM studies WHERE study_name = :name")
            return conn.execute(query, {"name": study}).first() is not None
    except sqlalchemy.exc.SQLAlchemyError:  # no file, no table yet, or the database is away
        return False


@functools.cache
def storage(url: str) -> Any:
    """One ``RDBStorage`` per URL for the session (Optuna imported on first use), creating nothing."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, skip_table_creation=True)


def load_study(url: str, study: str) -> Any:
    """The study named ``study`` in the storage at ``url`` (which must exist)."""
    import optuna

    return optuna.load_study(study_name=study, storage=storage(url))


def trials(url: str, study: str) -> list[Any]:
    """The study's trials, or [] while the study does not exist yet or the database is away."""
    if not study_exists(url, study):
        return []
    try:
        return list(load_study(url, study).get_trials(deepcopy=False))
    except Exception:  # noqa: BLE001 - polling: the database may be stopped on purpose
        return []
