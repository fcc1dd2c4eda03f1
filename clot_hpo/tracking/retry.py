"""Retry with exponential backoff for tracking calls: failures are reported, never raised.

A tracking hiccup (server restarting, SQLite locked by another process) must not cost a
trial its result, so every MLflow call of the tracker goes through :func:`call_with_retry`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from clot_hpo.errors import ClotHpoError
from clot_hpo.util import backoff_waits, first_line, retry_call

T = TypeVar("T")

log = logging.getLogger("clot_hpo.tracking")

# MLflow error codes that retrying cannot fix: the request itself is wrong.
PERMANENT_ERROR_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_ALREADY_EXISTS",
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_STATE",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "BAD_REQUEST",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FEATURE_DISABLED",
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether trying again might succeed (connection errors, 5xx, a locked database)."""
    if isinstance(exc, ClotHpoError):  # our own rule violations (a deleted experiment, ...)
        return False
    # A local file that is missing (or is a folder) stays so: an error, not a network hiccup.
    # (requests' ConnectionError is an OSError too, hence these subclasses only.)
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return False
    code = getattr(exc, "error_code", None)
    if isinstance(code, str):
        return code not in PERMANENT_ERROR_CODES
    # Bugs in the caller (wrong types, missing keys) do not heal by waiting.
    return not isinstance(exc, (TypeError, ValueError, KeyError, AttributeError, NotImplementedError))


def call_with_retry(
    what: str,
    fn: Callable[..., T],
    *args: Any,
    tries: int = 4,
    backoff_s: float = 1.0,
    default: Any = None,
    where: str = "",
    on_give_up: Callable[[BaseException], None] | None = None,
    **kwargs: Any,
) -> T | Any:
    """Call ``fn(*args, **kwargs)``; on failure wait ``backoff_s * 2**k`` and try again.

    Args:
        what: what the call does, for the warning (``"log epoch 3 metrics"``).
        fn: the call.
        tries: attempts in all (transient errors only; a permanent error stops at once).
        backoff_s: the first wait; each next wait doubles (with up to 25 % jitter).
        default: returned when every attempt failed.
        where: the tracking URI, named in the warning.
        on_give_up: called with the last error when every attempt failed.

    Returns:
        ``fn``'s result, or ``default`` after a ``logging.warning`` naming the call, the
        URI, the attempts and the last error.
    """
    attempts = 0

    def attempt() -> T:
        nonlocal attempts
        attempts += 1
        return fn(*args, **kwargs)

    def say_retrying(exc: Exception, wait: float) -> None:
        log.debug(
            "tracking: %s failed (attempt %d/%d), retrying in %.1f s: %s", what, attempts, tries, wait, exc
        )

    try:
        return retry_call(
            attempt,
            transient=is_transient,
            waits=backoff_waits(backoff_s, jitter=0.25, tries=max(1, tries)),
            on_retry=say_retrying,
        )
    except Exception as exc:  # noqa: BLE001 - tracking must never break the caller
        log.warning(
            "tracking: could not %s%s after %d attempt%s: %s: %s",
            what,
            f" at {where}" if where else "",
            attempts,
            "" if attempts == 1 else "s",
            type(exc).__name__,
            first_line(exc, limit=500, default=""),
        )
        log.debug("tracking failure detail", exc_info=True)
        if on_give_up is not None:
            on_give_up(exc)
        return default
