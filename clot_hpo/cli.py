"""The ``clot-hpo`` command line.

This is the only module that reads argv, sets up logging and maps errors to exit codes:
0 success, 2 bad input or config, 1 unexpected, 130 interrupted. Each package's
``commands.py`` declares its subcommands (options and handler) through ``add_commands``;
:func:`build_parser` only assembles them. What a flag leaves unset comes from the config in
one place, :func:`clot_hpo.config.defaults.apply_config_defaults`. Heavy libraries are
imported inside the commands so ``clot-hpo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from clot_hpo.budget import commands as budget_commands
from clot_hpo.data import commands as data_commands
from clot_hpo.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_UNEXPECTED, ClotHpoError
from clot_hpo.registry import commands as registry_commands
from clot_hpo.report import commands as report_commands
from clot_hpo.search import commands as search_commands
from clot_hpo.serve import commands as serve_commands
from clot_hpo.util import CommandHandler, first_line, redact_logging, redact_text, redact_url

if TYPE_CHECKING:
    from clot_hpo.search.ledger import TrialLedger

log = logging.getLogger("clot_hpo")


def _quiet_libraries() -> None:
    """Keep TensorFlow's C++ banner and MLflow's telemetry out of the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    # MLflow sets its own loggers to INFO on import ("Creating initial MLflow database tables").
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null while TensorFlow loads.

    TensorFlow's C++ prints a banner at import (oneDNN notice, absl pre-init warning) that
    TF_CPP_MIN_LOG_LEVEL does not cover.
    """
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_tensorflow_quietly() -> None:
    try:
        with _native_stderr_silenced():
            import tensorflow  # noqa: F401
    except ImportError:
        import tensorflow  # noqa: F401  - again, loudly: the user needs the reason


def _open_ledger(storage: str) -> TrialLedger:
    """The search's ledger of real trials for ``promote``: the registry does not import Optuna."""
    from clot_hpo.search.ledger import TrialLedger

    return TrialLedger(storage)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``clot-hpo`` command: each package declares its own."""
    parser = argparse.ArgumentParser(
        prog="clot-hpo",
        description="Hyperparameter search and experiment tracking for blood-clot classifiers.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: CommandHandler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.set_defaults(func=handler)
        return p

    data_commands.add_commands(add)
    search_commands.add_commands(add)
    budget_commands.add_commands(add)
    registry_commands.add_commands(add, open_ledger=_open_ledger)
    serve_commands.add_commands(add)
    report_commands.add_commands(add)
    return parser


def warn_url_credentials(args: argparse.Namespace) -> None:
    """Warn about a credential in a URL given on the command line, for every command that takes one.

    ``ps`` shows a process's arguments to every user of the machine; the warning says where
    the credential belongs instead (the URL itself is never printed).
    """
    from clot_hpo.config.defaults import STORAGE_ENV

    for flag, attr in (("--storage", "storage"), ("--tracking-uri", "tracking_uri")):
        url = getattr(args, attr, None)
        if url and redact_url(url) != url:
            log.warning(
                "%s carries a password, which every user of this machine can read (`ps`): put the storage "
                "URL in %s or the config, or its password in PGPASSWORD / ~/.pgpass; the tracking login "
                "in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
                flag,
                STORAGE_ENV,
            )


def _server_refusal(exc: BaseException) -> str | None:
    """The sentence for a tracking server that refused the login (401) or the action (403)."""
    code = getattr(exc, "error_code", None)
    first = redact_text(first_line(exc))
    if code == "UNAUTHENTICATED":
        return (
            f"the MLflow server requires a login ({first[:300]}); set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD in the environment"
        )
    if code == "PERMISSION_DENIED":
        return (
            f"the MLflow server refused this to the signed-in user ({first[:300]}); sign in as a user "
            "allowed to do it (registering models and moving aliases: the admin, docs/scale-out.md)"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clot-hpo`` console script; returns the exit code."""
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if debug else "%(message)s",
    )
    redact_logging()  # no log line shows a URL's password (a storage or tracking URL)
    for noisy in ("alembic", "mlflow", "urllib3", "absl", "tensorflow", "optuna"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
    if not debug:
        # Library deprecation/experimental warnings are for us, not for the user's terminal;
        # the environment variable carries the choice into each trial's process.
        warnings.simplefilter("ignore")
        # ...except Pillow's decompression-bomb warning ("Image size (N pixels) exceeds limit"),
        # which says something about the user's data (only above a raised data.max_pixels).
        warnings.filterwarnings("default", message=r"Image size \(")
        os.environ["PYTHONWARNINGS"] = "ignore,default:Image size ("
    else:
        os.environ["CLOT_HPO_DEBUG"] = "1"
    try:
        from clot_hpo.config.defaults import apply_config_defaults

        warn_url_credentials(args)  # before the config's URLs fill in what the command line lacks
        apply_config_defaults(args)
        if args.command in ("predict", "evaluate", "estimate-vram", "serve", "explain") and not debug:
            _import_tensorflow_quietly()
        return int(args.func(args) or 0)
    except ClotHpoError as exc:
        if debug:
            traceback.print_exc()
        print(f"clot-hpo: error: {redact_text(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("clot-hpo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 1
        if debug:
            traceback.print_exc()
        refusal = _server_refusal(exc)
        if refusal:
            print(f"clot-hpo: error: {refusal}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(
            f"clot-hpo: unexpected error: {type(exc).__name__}: {redact_text(str(exc))} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
