"""The ``promote``, ``predict`` and ``evaluate`` commands, and the model options ``serve`` shares.

MLflow and the gate's statistics are imported inside the commands: ``cli.py`` imports this
module to build its parser, and ``clot-hpo --help`` should not wait for them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clot_hpo.data.commands import add_image_limit_options
from clot_hpo.tracking.tags import PARAM_CONFIDENCE_LEVEL, TAG_TRIAL_NUMBER
from clot_hpo.util import AddCommand, finite_float

if TYPE_CHECKING:
    from clot_hpo.data.dicom import DicomSettings
    from clot_hpo.registry.gate import GateRule
    from clot_hpo.tracking.study_reader import Ledger


def gate_rule(args: argparse.Namespace) -> GateRule:
    """The promotion gate's rule from ``promote``'s options."""
    from clot_hpo.registry.gate import GateRule

    return GateRule(
        metric=getattr(args, "gate_metric", None) or "auc",
        min_delta=float(getattr(args, "min_delta", None) or 0.0),
        min_sensitivity=getattr(args, "min_sensitivity", None),
        max_ece=getattr(args, "max_ece", None),
        allow_different_test_sets=bool(getattr(args, "allow_different_test_sets", False)),
    )


def promote_command(args: argparse.Namespace, *, ledger: Ledger) -> int:
    """``clot-hpo promote``: print what happened, one line each.

    ``ledger`` is the Optuna storage the study ran on (``--storage``); only runs it vouches
    for are considered.
    """
    from clot_hpo.registry.promotion import promote

    result = promote(
        args.tracking_uri,
        args.experiment,
        ledger=ledger,
        model_name=args.model_name,
        alias=args.alias,
        metric=args.metric,
        direction=getattr(args, "direction", None),
        rule=gate_rule(args),
        lock_timeout_s=float(getattr(args, "lock_timeout", None) or 300.0),
        on_wait=lambda line: print(line, flush=True),
    )
    for line in result.messages:
        print(line)
    print()
    print(champion_table(args.tracking_uri, result.model_name, result.alias))
    return 0


def champion_table(tracking_uri: str, model_name: str, alias: str) -> str:
    """The seed's table (with its intervals) of the version that holds ``alias`` now.

    Read from its trial's run: validation chose the threshold, the test split was never
    seen by the search, so the test row is the figure to quote.
    """
    from clot_hpo.evaluate import format_table
    from clot_hpo.evaluate.catalogue import format_level
    from clot_hpo.registry.models import alias_version
    from clot_hpo.tracking.store import open_client

    client = open_client(tracking_uri)
    version = alias_version(client, model_name, alias)
    if version is None:
        return f"{model_name}@{alias} is not set: no champion yet"
    if not version.run_id:  # registered from a bare model: no run holds its metrics
        return f"{model_name}@{alias} is version {version.version} (no run: no metrics to show)"
    run = client.get_run(version.run_id)
    metrics, params = run.data.metrics, run.data.params
    table = format_table(
        {"Validation": metrics, "Test": metrics}, prefixes={"Validation": "val_", "Test": "test_"}
    )
    what = f"{params.get('backbone', 'model')}, trial {run.data.tags.get(TAG_TRIAL_NUMBER, '?')}"
    threshold = metrics.get("threshold")
    at = f" at threshold {threshold:.3f} (chosen on validation)" if threshold is not None else ""
    level = finite_float(params.get(PARAM_CONFIDENCE_LEVEL))  # None: a run from before it was logged
    intervals = f"{format_level(level)} intervals" if level is not None else "intervals"
    return f"{model_name}@{alias} is version {version.version} ({what}){at}; {intervals}:\n{table}"


def dicom_for_model(given: DicomSettings | None, trained: DicomSettings | None) -> DicomSettings:
    """The DICOM settings a command applies a model with (``data.dicom.settings_for_model``).

    A warning line on stderr says when the command's settings are not the training's.
    """
    from clot_hpo.data.dicom import settings_for_model

    settings, mismatch = settings_for_model(given, trained)
    if mismatch:
        print(f"clot-hpo: warning: {mismatch}", file=sys.stderr)
    return settings


def predict_command(args: argparse.Namespace) -> int:
    """``clot-hpo predict``: one JSON line per image, ``{"image", "probability", "label"}``.

    ``label`` is 1 (clot) when ``probability >= threshold`` (the model's stored threshold),
    else 0. Missing paths and non-images are a ``DataError`` (exit 2) naming them. Lines are
    written chunk by chunk, so a big folder shows results while it is still being scored.
    """
    from clot_hpo.data.dicom import DicomSettings
    from clot_hpo.data.limits import DEFAULT_MAX_PIXELS, check_headers
    from clot_hpo.data.pipeline import list_images
    from clot_hpo.evaluate.holdout import score_image_files
    from clot_hpo.registry.models import load_keras_model, resolve_model
    from clot_hpo.tracking.store import open_client

    files = list_images(args.paths)  # DataError (exit 2) names missing paths and non-images
    max_pixels = getattr(args, "max_pixels", None) or DEFAULT_MAX_PIXELS
    given = DicomSettings.given_in(args)
    # A bomb, or a DICOM file no installed package decodes, is refused before the tracking
    # store is opened (a multi-frame file too, unless a frame is given).
    check_headers(files, max_pixels, given or DicomSettings())
    client = open_client(args.tracking_uri)
    resolved = resolve_model(client, args.tracking_uri, args.model)
    dicom = dicom_for_model(given, resolved.dicom)  # none given: the training's
    model = load_keras_model(args.tracking_uri, resolved)
    for scored in score_image_files(model, files, resolved.image_size, max_pixels=max_pixels, dicom=dicom):
        for path, prob in scored:
            line = {
                "image": str(path),
                "probability": round(prob, 6),
                "label": int(prob >= resolved.threshold),
            }
            sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
    return 0


def evaluate_registered_model(
    tracking_uri: str,
    model_uri: str,
    data: str,
    *,
    config_path: str | None = None,
    data_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics (with intervals) of a registered model on a labelled dataset folder.

    The folder is scanned and validated before the model is loaded, so a bad folder fails
    fast; ``data_overrides`` are ``data`` keys from the command line (``max_pixels``...).
    DICOM files are windowed as the model was trained unless ``data_overrides`` say otherwise
    (``--dicom-window`` / ``--dicom-frame``, or ``--config``'s ``data.dicom``; a warning when
    that differs from the training's). The folder is validated with those, or the defaults
    (which refuse multi-frame files), before the store is opened.
    """
    from clot_hpo.evaluate.holdout import evaluate_model, load_labelled_folder
    from clot_hpo.registry.models import load_keras_model, resolve_model
    from clot_hpo.tracking.store import open_client

    folder = load_labelled_folder(data, config_path=config_path, overrides=data_overrides)
    resolved = resolve_model(open_client(tracking_uri), tracking_uri, model_uri)
    given = folder.dicom if (data_overrides or {}).get("dicom") is not None else None
    folder = dataclasses.replace(folder, dicom=dicom_for_model(given, resolved.dicom))
    model = load_keras_model(tracking_uri, resolved)
    result = evaluate_model(model, folder, threshold=resolved.threshold, image_size=resolved.image_size)
    applied = folder.dicom.as_metadata() if folder.dicom is not None else None
    return {
        "model": model_uri,
        "model_version": resolved.version,
        "run_id": resolved.run_id,
        "dicom": applied,  # how DICOM files were windowed (the model's training settings by default)
        **result,
    }


def evaluate_command(args: argparse.Namespace) -> int:
    """``clot-hpo evaluate``: the product's table as Markdown, then as JSON (``--json``: JSON only)."""
    from clot_hpo.data.dicom import DicomSettings
    from clot_hpo.evaluate import format_table
    from clot_hpo.evaluate.catalogue import format_level

    overrides: dict[str, Any] = {
        "max_pixels": getattr(args, "max_pixels", None),
        "allow_outside_root": getattr(args, "allow_outside_root", None),
    }
    given = DicomSettings.given_in(args)
    if given is not None:
        overrides["dicom"] = given.as_metadata()
    result = evaluate_registered_model(
        args.tracking_uri, args.model, args.data, config_path=args.config, data_overrides=overrides
    )
    if not args.json:
        title = Path(args.data).name or str(args.data)
        print(format_table({title: result["metrics"]}, counts={title: result["confusion_matrix"]}))
        print(
            f"\n{result['model']} (version {result['model_version']}) at threshold "
            f"{result['threshold']:.3f}; {format_level(result['confidence'])} intervals: Wilson for "
            "proportions, percentile bootstrap for AUC.\n"
        )
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


CONFIG_HELP = (
    "experiment YAML whose `tracking` section gives the defaults of --tracking-uri, the model name{}"
)
TRACKING_URI_HELP = "default: the config's tracking.uri, else sqlite:///mlruns/mlflow.db"


def add_model_options(p: argparse.ArgumentParser, *, config_help: str | None = None) -> None:
    """``--config``, ``--tracking-uri`` and ``--model``: which registered model a command uses."""
    p.add_argument("--config", help=config_help or CONFIG_HELP.format(" (--model)"))
    p.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    p.add_argument(
        "--model",
        help="default: models:/<the config's tracking.model_name, else blood-clot-detector>@champion",
    )


def add_commands(add: AddCommand, *, open_ledger: Callable[[str], Ledger]) -> None:
    """Declare ``promote``, ``predict`` and ``evaluate`` to the command line.

    Args:
        add: the command line's ``add(name, handler, help)``.
        open_ledger: the search's ledger of real trials on a storage URL: the registry does
            not import Optuna, so the command line passes it in.
    """
    p = add(
        "promote",
        lambda args: promote_command(args, ledger=open_ledger(args.storage)),
        "register the best trial's model and move the alias if it wins",
    )
    p.add_argument("--config", help=CONFIG_HELP.format(" (--model-name) and --experiment"))
    p.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
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

    p = add("predict", predict_command, "classify images with a registered model")
    add_model_options(p)
    add_image_limit_options(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")

    p = add("evaluate", evaluate_command, "the product's metrics table for a model on a dataset")
    add_model_options(
        p, config_help=CONFIG_HELP.format(" (--model)") + "; its `data` and `evaluation` sections apply"
    )
    p.add_argument("--data", required=True)
    p.add_argument("--json", action="store_true", help="print JSON only")
    add_image_limit_options(p, outside_root=True)


__all__ = [
    "add_commands",
    "add_model_options",
    "champion_table",
    "dicom_for_model",
    "gate_rule",
    "evaluate_command",
    "evaluate_registered_model",
    "predict_command",
    "promote_command",
]
