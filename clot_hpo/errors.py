"""Error kinds of clot-hpo and the exit codes they map to.

This module imports nothing else of the package so every layer can raise these.
"""

from __future__ import annotations

from typing import Any, Never, NoReturn, get_args

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
# A worker stopped by SIGTERM (docker stop, Kubernetes, a spot-instance notice) after it
# checkpointed its trial and queued it to resume: EX_TEMPFAIL, "try again later".
EXIT_PREEMPTED = 75


class ClotHpoError(Exception):
    """Base class of every error clot-hpo raises on purpose."""

    exit_code = EXIT_UNEXPECTED


class ConfigError(ClotHpoError):
    """A config, search space or command-line value is invalid (exit code 2).

    The message names the file and key path and states the rule that was broken.
    """

    exit_code = EXIT_BAD_INPUT


class DataError(ClotHpoError):
    """The dataset is unusable as given (exit code 2); the message names the entries."""

    exit_code = EXIT_BAD_INPUT


class TrackingUnavailable(ClotHpoError):
    """The tracking server cannot be reached before any work starts (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


class TrialFailed(ClotHpoError):
    """One trial failed; the study records the reason and goes on."""


class FatalError(ClotHpoError):
    """The study cannot go on (for example too many consecutive failures)."""


class Preempted(ClotHpoError):
    """The worker was told to stop (SIGTERM); its trial resumes in the next worker (exit code 75)."""

    exit_code = EXIT_PREEMPTED


def refuse_choice(key: str, choices: Any, got: Never) -> NoReturn:
    """Raise the :class:`ConfigError` for a value outside ``choices`` (a ``Literal`` type).

    Call it in the last ``case _:`` of a ``match`` over a ``Literal``-typed name: like
    ``typing.assert_never``, mypy accepts the call only where every choice has its own case
    (``got`` is narrowed to ``Never``), and at run time a name from elsewhere (a test, a
    benchmark) gets the one-line error instead of an ``AssertionError``.
    """
    raise ConfigError(f"{key} must be one of {sorted(get_args(choices))}, but got {got!r}")
