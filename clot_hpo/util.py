"""Small helpers every layer uses: an exception's first line, its chain, finite numbers, trial states.

Like :mod:`clot_hpo.errors`, this module imports nothing else of the package (nor Optuna or
MLflow), so any layer can use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, TypeVar

E = TypeVar("E", bound=BaseException)

# Optuna trial states that count as finished for budgets and progress: the trial ran to an
# answer (a value, or a reason to stop early). Names, so that this module needs no Optuna.
FINISHED_TRIAL_STATES = frozenset({"COMPLETE", "PRUNED"})


def first_line(exc: BaseException | str, *, limit: int | None = None, default: str | None = None) -> str:
    """The first non-empty line of an exception's message (or of a string).

    Library errors often carry a whole traceback or SQL statement after their first line;
    one line is what a user needs in a message.

    Args:
        exc: the exception or text.
        limit: cut the line to this many characters.
        default: returned for an empty message; the exception's type name when not given.
    """
    text = str(exc).strip()
    if text:
        line = text.splitlines()[0].strip()
    elif default is not None:
        line = default
    else:
        line = type(exc).__name__ if isinstance(exc, BaseException) else ""
    return line if limit is None else line[:limit]


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was raised from or during (``__cause__``, else ``__context__``).

    Cycles are cut: each exception is yielded once.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def find_in_chain(exc: BaseException, kind: type[E] | tuple[type[E], ...]) -> E | None:
    """The first exception of ``kind`` in :func:`exception_chain` of ``exc``, or None.

    Libraries wrap driver errors (an ``OperationalError`` inside a ``StorageInternalError``,
    or hidden behind an ``UnboundLocalError``): the cause is somewhere in the chain.
    """
    for item in exception_chain(exc):
        if isinstance(item, kind):
            return item
    return None


def finite_float(value: Any) -> float | None:
    """``float(value)`` when it is a finite number (NumPy scalars and numeric strings too), else None.

    Booleans are not numbers here: ``True`` is a flag, not ``1.0``.
    """
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def is_finished(state: Any) -> bool:
    """Whether an Optuna trial state (a ``TrialState`` or its name) is COMPLETE or PRUNED."""
    return str(getattr(state, "name", state)) in FINISHED_TRIAL_STATES


__all__ = [
    "FINISHED_TRIAL_STATES",
    "exception_chain",
    "finite_float",
    "find_in_chain",
    "first_line",
    "is_finished",
]
