"""The ``clot-hpo`` command line.

This is the only module that reads argv, sets up logging and maps errors to exit codes:
0 success, 2 bad input or config, 1 unexpected, 130 interrupted. Each command's work lives
in the package (``<concern>/commands.py`` or the concern's module); heavy libraries are
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
from collections.abc import Callable, Iterator, Sequence

from clot_hpo.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_UNEXPECTED, ClotHpoError, ConfigError
from clot_hpo.models import list_backbones, list_optimizers
from clot_hpo.util import first_line, redact_logging, redact_text, redact_url

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


# ----- commands ---------------------------------------------------------------------------
def _cmd_make_synthetic(args: argparse.Namespace) -> int:
    from clot_hpo.data.commands import make_synthetic_command

    return make_synthetic_command(args)


def _cmd_validate_data(args: argparse.Namespace) -> int:
    from clot_hpo.data.commands import validate_data_command

    return validate_data_command(args)


def _cmd_search(args: argparse.Namespace) -> int:
    from clot_hpo.search.commands import search_command

    return search_command(args)


def _cmd_prepare_study(args: argparse.Namespace) -> int:
    from clot_hpo.search.commands import prepare_study_command

    return prepare_study_command(args)


def _cmd_estimate_vram(args: argparse.Namespace) -> int:
    from clot_hpo.budget.commands import estimate_vram_command

    return estimate_vram_command(args)


def _cmd_promote(args: argparse.Namespace) -> int:
    from clot_hpo.registry.commands import promote_command
    from clot_hpo.search.ledger import TrialLedger

    # The registry does not import Optuna: the search's ledger of real trials is passed in.
    return promote_command(args, ledger=TrialLedger(args.storage))


def _cmd_predict(args: argparse.Namespace) -> int:
    from clot_hpo.registry.commands import predict_command

    return predict_command(args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from clot_hpo.registry.commands import evaluate_command

    return evaluate_command(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from clot_hpo.serve.commands import serve_command

    return serve_command(args)


def _cmd_explain(args: argparse.Namespace) -> int:
    from clot_hpo.serve.commands import explain_command

    return explain_command(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from clot_hpo.report.commands import report_command

    if args.tracking_uri is None:
        from clot_hpo.config import TrackingConfig

        args.tracking_uri = TrackingConfig().uri
    return report_command(args)


# ----- parser -----------------------------------------------------------------------------
def _add_dicom_options(p: argparse.ArgumentParser) -> None:
    """How a DICOM file becomes an image: the study's window and frame, unless these say otherwise."""
    p.add_argument(
        "--dicom-window",
        type=float,
        nargs=2,
        metavar=("CENTER", "WIDTH"),
        help="window of DICOM files that carry none (default: the config's data.dicom.window, else "
        "the full range); use the study's",
    )
    p.add_argument(
        "--dicom-frame",
        type=int,
        help="frame (0-based) of multi-frame DICOM files (default: the config's data.dicom.frame, "
        "else such files are refused)",
    )


def _add_image_limits(p: argparse.ArgumentParser, *, outside_root: bool = False) -> None:
    """The data layer's limits as options: the pixel limit and, for data folders, the root rule."""
    p.add_argument(
        "--max-pixels",
        type=int,
        help="largest width x height, checked from the header before decoding "
        "(default: the config's data.max_pixels, else 50,000,000)",
    )
    _add_dicom_options(p)
    if outside_root:
        p.add_argument(
            "--allow-outside-root",
            action="store_true",
            default=None,
            help="accept images outside the data folder (absolute paths, ../, links leaving it)",
        )


def _add_study_options(p: argparse.ArgumentParser) -> None:
    """The options that name a study and its servers: ``search`` and ``prepare-study``."""
    p.add_argument("config", help="experiment YAML (experiments/*.yaml)")
    p.add_argument("--study-name")
    p.add_argument(
        "--storage",
        help="Optuna storage URL (sqlite:///..., postgresql+psycopg2://...); default: $CLOT_HPO_STORAGE, "
        "else the config's search.storage. No password here (`ps` shows it): use PGPASSWORD",
    )
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (sqlite:///... or http://...); a server's login comes from "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
    )
    p.add_argument("--no-tracking", action="store_true", help="use the no-op tracker")
    p.add_argument("--data", help="data folder (overrides data.path)")
    p.add_argument("--seed", type=int)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``clot-hpo`` command."""
    parser = argparse.ArgumentParser(
        prog="clot-hpo",
        description="Hyperparameter search and experiment tracking for blood-clot classifiers.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.set_defaults(func=func)
        return p

    p = add("make-synthetic", _cmd_make_synthetic, "write a deterministic synthetic clot dataset")
    p.add_argument("out", help="output folder (Kaggle layout: positive/, negative/, metadata.csv)")
    p.add_argument("--n-per-class", type=int, default=200)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--difficulty",
        default=None,
        help="0 (easy: large, high-contrast clot) to 1 (hard: small, faint clot, more "
        "distractors), or easy, medium, hard (default: easy, 0)",
    )
    p.add_argument(
        "--format",
        choices=["png", "dicom"],
        default="png",
        help="png (default), or dicom: the same pictures as 16-bit CT-like DICOM files with "
        "fictitious patient headers, in class folders without a metadata CSV",
    )
    p.add_argument(
        "--prevalence",
        type=float,
        default=None,
        help="share of positive images, 0 < P < 1 (default 0.5); the set keeps 2 x N images "
        "(rare positives: docs/data.md)",
    )

    p = add("validate-data", _cmd_validate_data, "check a dataset, split it and report leakage")
    p.add_argument("data", help="data folder (class folders or metadata CSV)")
    p.add_argument("--config", help="experiment YAML whose `data` section applies")
    p.add_argument("--layout", choices=["auto", "folders", "metadata"])
    p.add_argument("--metadata-csv", help="metadata CSV name or path (metadata layout)")
    p.add_argument("--group-column", help="column naming the patient/source image")
    p.add_argument(
        "--skip-corrupt",
        action="store_true",
        default=None,
        help="skip unreadable images (each is listed) instead of refusing",
    )
    p.add_argument(
        "--fail-on-leakage", action="store_true", default=None, help="exit 2 when duplicates cross splits"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="folder for the split manifest and report (default: DATA/.clot-hpo)")
    _add_image_limits(p, outside_root=True)

    p = add("search", _cmd_search, "launch or resume an Optuna study")
    _add_study_options(p)
    p.add_argument("--n-trials", type=int)
    p.add_argument("--timeout", type=float, help="wall-clock budget in seconds")
    p.add_argument("--max-total-epochs", type=int, help="budget of epochs over all trials")
    p.add_argument("--epochs", type=int, help="epochs per trial (overrides training.epochs)")
    p.add_argument("--vram-gb", type=float, help="VRAM budget in GiB (overrides budget.vram_gb)")
    p.add_argument(
        "--fidelity",
        choices=["epochs", "resolution", "both"],
        help="what the pruner's rungs spend (overrides search.fidelity; docs/pruning.md)",
    )

    p = add(
        "prepare-study",
        _cmd_prepare_study,
        "validate config, data and servers, then create the study and enqueue its defaults once "
        "(run before starting workers; again changes nothing)",
    )
    _add_study_options(p)

    p = add("estimate-vram", _cmd_estimate_vram, "estimate a training configuration's GPU memory")
    p.add_argument("--backbone", required=True, choices=list_backbones())
    p.add_argument("--image-size", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--trainable", choices=["all", "head"], default="all")
    p.add_argument("--optimizer", choices=list_optimizers(), default="adam")
    p.add_argument("--vram-gb", type=float, help="card memory in GiB: also print whether it fits")
    p.add_argument("--safety-margin", type=float, default=0.1, help="share of the card kept free")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    config_help = (
        "experiment YAML whose `tracking` section gives the defaults of --tracking-uri, the model name{}"
    )
    p = add("promote", _cmd_promote, "register the best trial's model and move the alias if it wins")
    p.add_argument("--config", help=config_help.format(" (--model-name) and --experiment"))
    p.add_argument(
        "--tracking-uri", help="default: the config's tracking.uri, else sqlite:///mlruns/mlflow.db"
    )
    p.add_argument("--experiment", help="MLflow experiment (the study name); required without --config")
    p.add_argument("--model-name", help="default: the config's tracking.model_name, else blood-clot-detector")
    p.add_argument("--alias", default="champion")
    p.add_argument("--metric", help="metric to rank trials by (default: the one the study optimized)")
    p.add_argument(
        "--direction",
        choices=["maximize", "minimize"],
        help="only for a metric the study did not optimize: whether higher or lower is better",
    )
    p.add_argument(
        "--storage",
        help="Optuna storage the study ran on (only its COMPLETE trials can be promoted); "
        "default: $CLOT_HPO_STORAGE, else the config's search.storage, else sqlite:///mlruns/optuna.db",
    )
    p.add_argument(
        "--gate-metric",
        choices=["auc", "accuracy"],
        default="auc",
        help="paired test on the test split: auc (DeLong, default) or accuracy (McNemar)",
    )
    p.add_argument(
        "--min-delta",
        type=float,
        default=0.0,
        help="the 95%% interval of the difference must lie above this (default 0)",
    )
    p.add_argument("--min-sensitivity", type=float, help="floor: the candidate's test sensitivity")
    p.add_argument("--max-ece", type=float, help="ceiling: the candidate's test ECE")
    p.add_argument(
        "--allow-different-test-sets",
        action="store_true",
        help="compare with a champion tested on other data (as independent samples) instead of refusing",
    )
    p.add_argument("--lock-timeout", type=float, default=300.0, help="seconds to wait for another promotion")

    model_help = "default: models:/<the config's tracking.model_name, else blood-clot-detector>@champion"
    p = add("predict", _cmd_predict, "classify images with a registered model")
    p.add_argument("--config", help=config_help.format(" (--model)"))
    p.add_argument(
        "--tracking-uri", help="default: the config's tracking.uri, else sqlite:///mlruns/mlflow.db"
    )
    p.add_argument("--model", help=model_help)
    _add_image_limits(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")

    p = add("evaluate", _cmd_evaluate, "the product's metrics table for a model on a dataset")
    p.add_argument(
        "--tracking-uri", help="default: the config's tracking.uri, else sqlite:///mlruns/mlflow.db"
    )
    p.add_argument("--model", help=model_help)
    p.add_argument("--data", required=True)
    p.add_argument(
        "--config", help=config_help.format(" (--model)") + "; its `data` and `evaluation` sections apply"
    )
    p.add_argument("--json", action="store_true", help="print JSON only")
    _add_image_limits(p, outside_root=True)

    p = add("serve", _cmd_serve, "the diagnostic web page (probability, decision, Grad-CAM) of a model")
    p.add_argument("--config", help=config_help.format(" (--model)"))
    p.add_argument(
        "--tracking-uri", help="default: the config's tracking.uri, else sqlite:///mlruns/mlflow.db"
    )
    p.add_argument("--model", help=model_help)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: the page has no authentication)",
    )
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--trusted-host",
        action="append",
        dest="trusted_hosts",
        metavar="NAME",
        help="a name the page answers to besides the loopback names and --host (repeatable; the Host "
        "header of any other is refused: default the config's serve.trusted_hosts)",
    )
    serve_default = "default: the config's serve.{}, else {}"
    p.add_argument(
        "--max-upload-mb",
        type=float,
        help="largest image file accepted (413); " + serve_default.format("max_upload_mb", 10),
    )
    p.add_argument(
        "--max-files", type=int, help="most images per request; " + serve_default.format("max_files", 16)
    )
    p.add_argument(
        "--max-request-mb",
        type=float,
        help="largest request body (413); " + serve_default.format("max_request_mb", 32),
    )
    p.add_argument(
        "--max-concurrent-uploads",
        type=int,
        help="request bodies received at once (503 with Retry-After past it); "
        + serve_default.format("max_concurrent_uploads", 4),
    )
    p.add_argument(
        "--max-buffered-mb",
        type=float,
        help="bytes all requests in flight may hold (503 with Retry-After past it); "
        + serve_default.format("max_buffered_mb", 128),
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        help="largest declared width x height accepted, checked before decoding (413 above; "
        "default: the config's data.max_pixels, else 50,000,000)",
    )
    _add_dicom_options(p)

    p = add("report", _cmd_report, "a study's report: results with intervals, paired tests, calibration")
    p.add_argument("--experiment", required=True, help="MLflow experiment (the study name)")
    p.add_argument("--tracking-uri", help="default: sqlite:///mlruns/mlflow.db")
    p.add_argument("--out", help="folder for report.md and report.html (default: mlruns/reports/EXPERIMENT)")

    p = add("explain", _cmd_explain, "write Grad-CAM overlays of images with a registered model")
    p.add_argument("--config", help=config_help.format(" (--model)"))
    p.add_argument(
        "--tracking-uri", help="default: the config's tracking.uri, else sqlite:///mlruns/mlflow.db"
    )
    p.add_argument("--model", help=model_help)
    p.add_argument("--out", required=True, help="folder for the overlays (<image>.gradcam.png)")
    _add_image_limits(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    return parser


def apply_config_defaults(args: argparse.Namespace) -> None:
    """Fill what ``promote``, ``predict`` and ``evaluate`` were not given from ``--config``.

    The config's ``tracking`` section (``uri``, ``model_name``, ``experiment`` or the study
    name) is what the search used, so the same file finds the same model; without a config
    the schema's defaults apply. Flags given on the command line always win.

    Raises:
        ConfigError: the config is invalid, or ``promote`` has neither ``--experiment`` nor
            ``--config``.
    """
    if args.command not in ("promote", "predict", "evaluate", "serve", "explain"):
        return
    from clot_hpo.config import TrackingConfig, load_config

    config = load_config(args.config) if getattr(args, "config", None) else None
    tracking = config.tracking if config is not None else TrackingConfig()
    if args.tracking_uri is None:
        args.tracking_uri = tracking.uri
    if getattr(args, "max_pixels", False) is None:  # one pixel limit: the config's data.max_pixels
        from clot_hpo.config import DataConfig

        args.max_pixels = (config.data if config is not None else DataConfig()).max_pixels
    if hasattr(args, "dicom_window"):  # the study's DICOM window and frame, unless flags say otherwise
        from clot_hpo.config.schema import DicomConfig

        dicom = config.data.dicom if config is not None else DicomConfig()
        if args.dicom_window is None:
            args.dicom_window = dicom.window
        if args.dicom_frame is None:
            args.dicom_frame = dicom.frame
    if args.command == "serve":  # the page's limits: flags, else the config's serve section
        from clot_hpo.config import ServeConfig

        serve = config.serve if config is not None else ServeConfig()
        for key in ServeConfig.model_fields:
            if getattr(args, key, None) is None:
                setattr(args, key, getattr(serve, key))
    if args.command == "promote":
        if args.storage is None:  # as `search` finds it: the environment, then the config
            from clot_hpo.config.schema import SearchConfig
            from clot_hpo.search.commands import STORAGE_ENV

            args.storage = os.environ.get(STORAGE_ENV) or (
                config.search.storage if config is not None else SearchConfig().storage
            )
        if args.model_name is None:
            args.model_name = tracking.model_name
        if args.experiment is None:
            if config is None:
                raise ConfigError("promote needs --experiment (the study name) or --config")
            args.experiment = tracking.experiment or config.study_name
    elif args.model is None:
        args.model = f"models:/{tracking.model_name}@champion"


def warn_url_credentials(args: argparse.Namespace) -> None:
    """Warn about a credential in a URL given on the command line, for every command that takes one.

    ``ps`` shows a process's arguments to every user of the machine; the warning says where
    the credential belongs instead (the URL itself is never printed).
    """
    from clot_hpo.search.commands import STORAGE_ENV

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
