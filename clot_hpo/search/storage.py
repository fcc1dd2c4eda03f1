"""Optuna storages: SQLite for one machine, PostgreSQL for many workers; riding out an outage."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from clot_hpo.errors import ConfigError, FatalError
from clot_hpo.search.optuna_compat import storage_error
from clot_hpo.util import first_line
from clot_hpo.util import redact_url as redact_url  # re-exported: clot_hpo.search.redact_url

if TYPE_CHECKING:
    from rich.console import Console


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Study and trial processes write to the same file: wait for locks instead of failing.
        return {"connect_args": {"timeout": 60}}
    # Survive a database restart: test pooled connections before use.
    return {"pool_pre_ping": True}


def _ensure_sqlite_folder(url: str) -> None:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int = 1,
) -> RDBStorage:
    """Open an Optuna RDB storage.

    With ``heartbeat_interval``, a trial whose process stops beating for ``grace_period``
    seconds is marked FAIL by the next worker that starts a trial, and its parameters are
    queued again (up to ``max_retry`` times) by ``RetryHeartbeatStaleTrialCallback``.
    """
    if "://" not in url:
        raise ConfigError(
            f"search.storage must be a database URL such as sqlite:///mlruns/optuna.db, but got {url!r}"
        )
    _ensure_sqlite_folder(url)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        kwargs = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period or 3 * heartbeat_interval,
            "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
        }
    try:
        return _create_rdb_storage(url, kwargs)
    except ImportError as exc:
        raise ConfigError(
            f"search.storage {redact_url(url)!r} needs a database driver that is not installed: {exc}"
        ) from exc
    except Exception as exc:  # sqlalchemy raises many kinds for a bad URL or a dead server
        raise ConfigError(
            f"search.storage: cannot open {redact_url(url)}: {type(exc).__name__}: {first_line(exc)}"
        ) from exc


class _ResilientRDBStorage(RDBStorage):
    """An RDBStorage whose heartbeats survive a database outage.

    Optuna's heartbeat thread does not catch errors: one failed write ends the thread with a
    traceback on stderr, and the trial, still running, later looks stale to other workers.
    """

    def record_heartbeat(self, trial_id: int) -> None:  # noqa: D102
        import sqlalchemy.exc
        from optuna.exceptions import StorageInternalError

        try:
            super().record_heartbeat(trial_id)
        except (StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
            # Optuna wraps the driver error in a misleading "invalid data" message: show the cause.
            cause = exc.__cause__ or exc
            logging.getLogger(__name__).warning(
                "heartbeat of trial id %s not recorded: %s",
                trial_id,
                first_line(getattr(cause, "orig", cause)),
            )


# Any constant: the advisory lock under which workers create Optuna's schema.
_SCHEMA_LOCK_KEY = 0x0C1074B0


def _create_rdb_storage(url: str, kwargs: dict[str, Any]) -> RDBStorage:
    """``RDBStorage(url)``; on PostgreSQL under a session advisory lock.

    Workers started together on a fresh database race in Optuna's ``metadata.create_all``
    (``CREATE TYPE``/``CREATE TABLE`` are not atomic: UniqueViolation on
    ``pg_type_typname_nsp_index``). With the lock one worker creates the schema while the
    others wait, then find it in place.
    """
    if not url.startswith("postgresql"):
        return _ResilientRDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            try:
                return _ResilientRDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()


def retried_from(trial: optuna.trial.FrozenTrial) -> int | None:
    """The number of the stale trial this one retries, if any."""
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


# Retrying the storage for this long covers a database restart; then the study stops.
STORAGE_RETRY_SECONDS = 60.0


def call_retrying_storage(
    func: Callable[[], Any],
    *,
    console: Console,
    rerun: bool = True,
    retry_seconds: float = STORAGE_RETRY_SECONDS,
) -> Any:
    """Call ``func``, retrying with backoff while the storage is unreachable.

    ``rerun=False`` waits once and returns None instead of calling ``func`` again: for
    ``study.optimize``, whose trial may already have run (and even been told) when the
    error came, so the caller must re-read the study and its budgets first.

    Raises:
        FatalError: the storage stayed unreachable for ``retry_seconds``.
    """
    import sqlalchemy.exc

    deadline = time.monotonic() + retry_seconds
    delay = 1.0
    while True:
        try:
            return func()
        except Exception as raised:  # noqa: BLE001 - storage errors hide behind others, see below
            exc = storage_error(raised, sqlalchemy.exc.OperationalError)
            if exc is None:
                raise
            if time.monotonic() >= deadline:
                raise FatalError(
                    f"lost the Optuna storage for {retry_seconds:.0f} s "
                    f"({first_line(exc.orig)}); finished trials are safe in "
                    "the storage: rerun the same command to resume"
                ) from exc
            console.print(f"[yellow]storage unreachable, retrying in {delay:.0f} s[/]")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
            if not rerun:
                return None
