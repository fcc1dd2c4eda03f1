"""Optuna storages: SQLite for one machine, PostgreSQL for many workers; riding out an outage."""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from clot_hpo.errors import ConfigError, FatalError
from clot_hpo.search.optuna_compat import storage_error
from clot_hpo.util import backoff_waits, first_line, retry_call
from clot_hpo.util import redact_url as redact_url  # re-exported: clot_hpo.search.redact_url

if TYPE_CHECKING:
    from rich.console import Console


# Connections a database storage keeps per process. SQLAlchemy's default pool keeps every
# connection a process ever opened (up to 5 idle): benchmarks/storage_scale.py measured two per
# worker process (128 connections at 64), and each PostgreSQL connection is a server process.
# One kept connection serves the study's main thread (66 at 64 processes, docs/kubernetes.md);
# its heartbeat thread may open one more for a moment.
POOL_SIZE, POOL_OVERFLOW = 1, 2


def _engine_kwargs(url: str, *, pooled: bool = True) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Study and trial processes write to the same file: wait for locks instead of failing.
        return {"connect_args": {"timeout": 60}}
    if not pooled:
        from sqlalchemy.pool import NullPool

        # A connection per call (about 3x slower per call, benchmarks/storage_scale.py), none
        # held between calls: for a trial process, which writes once per epoch.
        return {"poolclass": NullPool}
    # Survive a database restart: test pooled connections before use.
    return {"pool_pre_ping": True, "pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}


def _ensure_sqlite_folder(url: str) -> None:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int = 1,
    pooled: bool = True,
) -> RDBStorage:
    """Open an Optuna RDB storage.

    With ``heartbeat_interval``, a trial whose process stops beating for ``grace_period``
    seconds is marked FAIL by the next worker that starts a trial, and its parameters are
    queued again (up to ``max_retry`` times) by ``RetryHeartbeatStaleTrialCallback``.
    A database server's storage keeps one connection open (``POOL_SIZE``); ``pooled=False``
    keeps none between calls (trial processes: a thousand idle workers hold no connections).
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
        return _create_rdb_storage(url, kwargs, pooled=pooled)
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


# Any constants: the advisory locks under which workers create Optuna's schema, and prepare
# a study (PostgreSQL's two-key form: this class, then a hash of the study's name).
_SCHEMA_LOCK_KEY = 0x0C1074B0
_STUDY_LOCK_CLASS = 0x0C1074B1


@contextlib.contextmanager
def _advisory_lock(url: str, *key: int) -> Iterator[None]:
    """Hold PostgreSQL's session advisory lock ``key`` (one or two integers) on its own connection."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    args = ", ".join(f":k{i}" for i in range(len(key)))
    params = {f"k{i}": k for i, k in enumerate(key)}
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({args})"), params)
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({args})"), params)
    finally:
        engine.dispose()


@contextlib.contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """Hold a lock on ``study_name`` that every worker of the storage ``url`` sees.

    PostgreSQL: a session advisory lock keyed by the study's name. SQLite: ``flock`` on a
    file beside the database (workers of one SQLite file share a machine). Other databases:
    no lock (what is done under it must then be idempotent on its own).
    """
    if url.startswith("postgresql"):
        # A signed 32-bit key: PostgreSQL's two-key form takes two int4.
        name_key = zlib.crc32(study_name.encode()) - 2**31
        with _advisory_lock(url, _STUDY_LOCK_CLASS, name_key):
            yield
    else:
        with _sqlite_file_lock(url):
            yield


@contextlib.contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    """``flock`` on ``<database>.lock`` beside a SQLite file (its workers share a machine); else nothing."""
    if not url.startswith("sqlite:///") or url.startswith("sqlite:///:memory:"):
        yield
        return
    import fcntl

    lock_path = Path(url.removeprefix("sqlite:///")).expanduser().with_suffix(".lock")
    try:
        handle = open(lock_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:  # a read-only folder (a store only read, e.g. by `promote`): nobody to exclude
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _create_rdb_storage(url: str, kwargs: dict[str, Any], *, pooled: bool = True) -> RDBStorage:
    """``RDBStorage(url)``; on PostgreSQL under a session advisory lock, on SQLite under its file's lock.

    Workers started together on a fresh database race in Optuna's ``metadata.create_all``
    (``CREATE TYPE``/``CREATE TABLE`` are not atomic: UniqueViolation on
    ``pg_type_typname_nsp_index``). With the lock one worker creates the schema while the
    others wait, then find it in place.
    """
    engine_kwargs = _engine_kwargs(url, pooled=pooled)
    if url.startswith("postgresql"):
        with _advisory_lock(url, _SCHEMA_LOCK_KEY):
            return _ResilientRDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    # SQLite too: besides the tables, Optuna writes its version row and Alembic stamp when it
    # finds them missing, and a second process opening a fresh file between the two fails.
    with _sqlite_file_lock(url):
        return _ResilientRDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)


def retried_from(trial: optuna.trial.FrozenTrial) -> int | None:
    """The number of the stale trial this one retries, if any."""
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


# Retrying the storage for this long covers a database restart; then the study stops.
STORAGE_RETRY_SECONDS = 60.0


def storage_outage(exc: BaseException) -> Any:
    """The database error behind ``exc`` that means the storage is unreachable, or None.

    A refused or dropped connection is an ``OperationalError``; a commit on a connection the
    server already closed is an ``InterfaceError`` ("connection already closed"), which Optuna
    wraps in a ``StorageInternalError`` about invalid data; any driver error that invalidated
    its connection is one too. Anything else (a bad query, invalid data) is not an outage.
    """
    import sqlalchemy.exc

    found = storage_error(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError))
    if found is not None:
        return found
    driver = storage_error(exc, sqlalchemy.exc.DBAPIError)
    return driver if driver is not None and driver.connection_invalidated else None


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
    deadline = time.monotonic() + retry_seconds
    waited = False

    def attempt() -> Any:
        if waited and not rerun:
            return None  # the wait is done: the caller re-reads the study before another call
        return func()

    def say_retrying(exc: Exception, wait: float) -> None:
        nonlocal waited
        waited = True
        console.print(f"[yellow]storage unreachable, retrying in {wait:.0f} s[/]")

    try:
        return retry_call(
            attempt,
            # Storage errors hide behind others (optuna_compat.storage_error).
            transient=lambda exc: storage_outage(exc) is not None,
            waits=backoff_waits(1.0, cap_s=10.0, until=deadline),
            on_retry=say_retrying,
        )
    except Exception as raised:
        exc = storage_outage(raised)
        if exc is None:
            raise
        raise FatalError(
            f"lost the Optuna storage for {retry_seconds:.0f} s "
            f"({first_line(exc.orig)}); finished trials are safe in "
            "the storage: rerun the same command to resume"
        ) from exc
