"""Optuna storages: SQLite for one machine, PostgreSQL for many workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from clot_hpo.errors import ConfigError


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
        raise ConfigError(f"search.storage must be a database URL such as sqlite:///mlruns/optuna.db, but got {url!r}")
    _ensure_sqlite_folder(url)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        kwargs = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period or 3 * heartbeat_interval,
            "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
        }
    try:
        return RDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
    except ImportError as exc:
        raise ConfigError(f"search.storage {url!r} needs a database driver that is not installed: {exc}") from exc
    except Exception as exc:  # sqlalchemy raises many kinds for a bad URL or a dead server
        raise ConfigError(f"search.storage: cannot open {_redact(url)}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0]}") from exc


def _redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def retried_from(trial: optuna.trial.FrozenTrial) -> int | None:
    """The number of the stale trial this one retries, if any."""
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
