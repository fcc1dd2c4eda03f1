"""Small helpers every layer uses: first lines, exception chains, numbers, states, redacted URLs.

Like :mod:`clot_hpo.errors`, this module imports nothing else of the package (nor Optuna or
MLflow), so any layer can use it.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import import_module
from pathlib import Path
from typing import Any, TypeVar

E = TypeVar("E", bound=BaseException)

CommandHandler = Callable[[argparse.Namespace], int]
"""What a ``clot-hpo`` subcommand runs: its parsed arguments in, the exit code out."""
AddCommand = Callable[[str, CommandHandler, str], argparse.ArgumentParser]
"""``add(name, handler, help)``: how a package's ``commands.py`` declares a subcommand to ``cli.py``,
which returns the subcommand's parser for its options."""

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


# ----- a trial's objective value and the best trial: the one rule every reader uses --------------
# The trials' value Optuna ranked by (``value``), else the objective's logged metric (runs that
# logged no value); ties go to the lower trial number, as in Optuna's ``best_trial``.
OBJECTIVE_VALUE_KEY = "value"
T = TypeVar("T")


def objective_value(metrics: Mapping[str, Any], objective: str | None) -> float | None:
    """A finished trial's objective value from its metrics: ``value`` first, else ``objective``.

    Args:
        metrics: the trial run's metrics (or an Optuna trial's ``{"value": trial.value}``).
        objective: the metric the study optimizes (``val_auc``), for runs without ``value``.

    Returns:
        The first finite one, or None.
    """
    for key in (OBJECTIVE_VALUE_KEY, objective):
        value = finite_float(metrics.get(key)) if key else None
        if value is not None:
            return value
    return None


def rank_trials(
    items: Iterable[T],
    *,
    value: Callable[[T], float | None],
    number: Callable[[T], int | None],
    direction: str,
) -> list[T]:
    """Trials with a finite value, best first: by ``direction``, ties to the lower trial number.

    Args:
        items: the trials (any type: Optuna trials, MLflow runs, records).
        value: a trial's objective value (see :func:`objective_value`); None leaves it out.
        number: a trial's number; None sorts after every number.
        direction: ``"maximize"`` or ``"minimize"``.

    Raises:
        ValueError: ``direction`` is neither.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"`direction` must be maximize or minimize, but got {direction!r}")
    sign = -1.0 if direction == "maximize" else 1.0
    scored = [(v, item) for item in items if (v := value(item)) is not None and math.isfinite(v)]

    def key(pair: tuple[float, T]) -> tuple[float, int]:
        n = number(pair[1])
        return sign * pair[0], n if n is not None else 1 << 62

    return [item for _, item in sorted(scored, key=key)]


# A query or connection-string key that carries a credential: libpq's password, sslpassword
# and passfile, and any key naming a password, secret or token (api_key, access_token, ...).
_SECRET_KEY = (
    r"[A-Za-z0-9_.\-]*"
    r"(?:pass(?:word|wd|file)|pwd|secret|token|api[_\-]?key|access[_\-]?key|credential)"
    r"[A-Za-z0-9_.\-]*"
)
# ``key=value`` after the start of a query (?), another parameter (&, ;) or, in a libpq
# connection string or an error that quotes one, a space: the value up to the next separator.
_SECRET_PARAM = re.compile(
    rf"(?P<head>(?:^|[?&;\s])(?P<key>{_SECRET_KEY})=)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^&;\s'\"#]*)",  # libpq quotes values with spaces
    re.IGNORECASE,
)


def _redact_params(text: str) -> str:
    return (
        _SECRET_PARAM.sub(lambda m: m["head"] + ("***" if m["value"] else ""), text) if "=" in text else text
    )


def redact_url(url: str) -> str:
    """Hide every credential in a database or http URL before it is shown or written anywhere.

    The password of ``user:password@`` (parsed with SQLAlchemy's ``make_url``, imported here,
    when called) and the value of every query key that carries one (``?password=``,
    ``sslpassword``, ``passfile``, ``token``, ...: see :data:`_SECRET_PARAM`). A URL without
    a credential is returned unchanged, so ``redact_url(url) != url`` tells that it has one.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = _redact_params(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is not None and "@" not in (parsed.host or ""):
        if parsed.password is None:
            return url
        # Rendered by hand rather than with render_as_string: that re-encodes the query, and
        # the redacted values above must stay as they are.
        base, query_sep, query = url.partition("?")
        scheme, _, rest = base.partition("://")
        userinfo, _, host = rest.rpartition("@")
        return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}{query_sep}{query}"
    if "@" not in url.partition("?")[0]:
        return url
    # Unparseable, or an unescaped "@" in the password that SQLAlchemy reads as part of the
    # host: hide everything before the last "@" (of the part before the query).
    scheme, sep, _ = url.partition("://")
    base, query_sep, query = url.partition("?")
    return f"{scheme}{sep}***@{base.rpartition('@')[2]}{query_sep}{query}"


# ``scheme://user:password@`` anywhere in a text (a log line, an error from a library).
_CREDENTIALS_IN_TEXT = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@'\"]*):[^\s'\"]*@")


def redact_text(text: str) -> str:
    """``text`` with every credential of a URL in it hidden: ``user:password@`` and secret query keys.

    Also a libpq connection string's ``password=...`` (errors from drivers quote them).
    """
    if "://" in text:
        text = _CREDENTIALS_IN_TEXT.sub(r"\g<head>:***@", text)
    return _redact_params(text)


def redact_secrets(obj: Any) -> Any:
    """A copy of a JSON-like value (a config dump) with every URL's credentials hidden.

    Every string is redacted, at any depth: storage and tracking URLs are not the only places
    a URL with credentials can be written (a database URL in a search-space note, say).
    """
    if isinstance(obj, dict):
        return {k: redact_secrets(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_secrets(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(redact_url(obj)) if "://" in obj else redact_text(obj)
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that hides URL passwords in each record's message (see :func:`redact_text`)."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: logging reports it itself
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_logging(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes, read in 4 MiB blocks (model files, image keys)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(4 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    """The sha256 (hex) of ``text`` as a file stores it (UTF-8): a predictions CSV's, say."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def backoff_waits(
    first_s: float,
    *,
    cap_s: float = math.inf,
    jitter: float = 0.0,
    tries: int | None = None,
    until: float | None = None,
) -> Iterator[float]:
    """The waits between attempts: ``first_s``, doubling up to ``cap_s``, each lengthened by up to ``jitter``.

    Args:
        first_s: the first wait.
        cap_s: no wait is longer (before jitter).
        jitter: each wait is multiplied by ``1 + jitter * U(0, 1)`` (spreads workers apart).
        tries: attempts in all: ``tries - 1`` waits at most.
        until: no wait once ``time.monotonic()`` has reached this.
    """
    delay, waited = first_s, 0
    while (tries is None or waited < tries - 1) and (until is None or time.monotonic() < until):
        yield delay * (1.0 + jitter * random.random())
        waited += 1
        delay = min(delay * 2.0, cap_s)


def retry_call(
    fn: Callable[[], T],
    *,
    transient: Callable[[Exception], bool],
    waits: Iterable[float],
    on_retry: Callable[[Exception, float], None],
) -> T:
    """``fn()``, again after each failure that ``transient`` says may heal, while ``waits`` last.

    The one retry loop of the package (tracking calls, the Optuna storage); the callers choose
    what is transient, the waits (:func:`backoff_waits`) and what to say.

    Args:
        fn: the call.
        transient: whether trying again might succeed after this failure.
        waits: the seconds to sleep before each next attempt.
        on_retry: told the failure and the wait before each sleep (a log line, a message).

    Raises:
        Exception: the last failure: a permanent one at once, a transient one when ``waits`` ran out.
    """
    remaining = iter(waits)
    while True:
        try:
            return fn()
        except Exception as exc:
            wait = next(remaining, None) if transient(exc) else None
            if wait is None:
                raise
            on_retry(exc, wait)
            time.sleep(wait)


def lazy_exports(namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's PEP 562 ``__getattr__`` and ``__dir__``: each name imported on first use.

    Keeps a package's import cheap (the CLI starts without TensorFlow, pandas or FastAPI)
    while ``from clot_hpo.data import make_dataset`` still works. The package lists each
    export once, as ``from <module> import name as name`` inside ``if TYPE_CHECKING:``
    (the ``as`` is mypy's explicit re-export), and ends with
    ``__getattr__, __dir__ = lazy_exports(globals())``; that block, read from the package's
    source, gives both where each name lives and ``__all__``.

    Args:
        namespace: the package's ``globals()``: ``__all__`` is set there, and a name, once
            imported, is stored there.
    """
    package = namespace["__name__"]
    where = type_checking_imports(Path(namespace["__file__"]).read_text(encoding="utf-8"))
    namespace["__all__"] = sorted(where)

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(import_module(where[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace["__all__"]))

    return __getattr__, __dir__


def type_checking_imports(source: str) -> dict[str, str]:
    """Exported name -> its module, from the ``from M import X as X`` lines under ``if TYPE_CHECKING:``.

    Raises:
        ValueError: a line there is relative, or imports a name under another name (it
            would not be exported under the name it is imported by).
    """
    where: dict[str, str] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"):
            continue
        for statement in node.body:
            if not isinstance(statement, ast.ImportFrom):
                continue
            if statement.level or statement.module is None:
                raise ValueError(
                    f"line {statement.lineno}: an absolute `from clot_hpo.x import y as y` must hold"
                )
            for alias in statement.names:
                if alias.asname != alias.name:
                    raise ValueError(
                        f"line {statement.lineno}: `import {alias.name} as {alias.name}` must hold "
                        f"(mypy's re-export), but got `as {alias.asname}`"
                    )
                where[alias.name] = statement.module
    return where


__all__ = [
    "AddCommand",
    "CommandHandler",
    "file_sha256",
    "FINISHED_TRIAL_STATES",
    "OBJECTIVE_VALUE_KEY",
    "exception_chain",
    "finite_float",
    "objective_value",
    "rank_trials",
    "find_in_chain",
    "first_line",
    "backoff_waits",
    "lazy_exports",
    "retry_call",
    "type_checking_imports",
    "RedactingFilter",
    "redact_logging",
    "redact_secrets",
    "redact_text",
    "redact_url",
    "text_sha256",
]
