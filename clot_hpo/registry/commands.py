"""The ``promote``, ``predict`` and ``evaluate`` commands (argument parsing is in ``cli.py``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from clot_hpo.registry.gate import GateRule
from clot_hpo.registry.models import alias_version, load_keras_model, resolve_model
from clot_hpo.registry.promotion import promote
from clot_hpo.tracking.store import open_client
from clot_hpo.tracking.study_reader import Ledger
from clot_hpo.tracking.tags import TAG_TRIAL_NUMBER


def gate_rule(args: argparse.Namespace) -> GateRule:
    """The promotion gate's rule from ``promote``'s options."""
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
    """The seed's table (with 95% intervals) of the version that holds ``alias`` now.

    Read from its trial's run: validation chose the threshold, the test split was never
    seen by the search, so the test row is the figure to quote.
    """
    from clot_hpo.evaluate import format_table

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
    return f"{model_name}@{alias} is version {version.version} ({what}){at}; 95% intervals:\n{table}"


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

    files = list_images(args.paths)  # DataError (exit 2) names missing paths and non-images
    max_pixels = getattr(args, "max_pixels", None) or DEFAULT_MAX_PIXELS
    dicom = DicomSettings.from_args(args)
    # A bomb, or a DICOM file no installed package decodes, is refused before any model loads.
    check_headers(files, max_pixels, dicom)
    client = open_client(args.tracking_uri)
    resolved = resolve_model(client, args.tracking_uri, args.model)
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
    """
    from clot_hpo.evaluate.holdout import evaluate_model, load_labelled_folder

    folder = load_labelled_folder(data, config_path=config_path, overrides=data_overrides)
    resolved = resolve_model(open_client(tracking_uri), tracking_uri, model_uri)
    model = load_keras_model(tracking_uri, resolved)
    result = evaluate_model(model, folder, threshold=resolved.threshold, image_size=resolved.image_size)
    return {"model": model_uri, "model_version": resolved.version, "run_id": resolved.run_id, **result}


def evaluate_command(args: argparse.Namespace) -> int:
    """``clot-hpo evaluate``: the product's table as Markdown, then as JSON (``--json``: JSON only)."""
    from clot_hpo.evaluate import format_table

    overrides: dict[str, Any] = {
        "max_pixels": getattr(args, "max_pixels", None),
        "allow_outside_root": getattr(args, "allow_outside_root", None),
    }
    if getattr(args, "dicom_window", None) is not None or getattr(args, "dicom_frame", None) is not None:
        overrides["dicom"] = {"window": args.dicom_window, "frame": args.dicom_frame}
    result = evaluate_registered_model(
        args.tracking_uri, args.model, args.data, config_path=args.config, data_overrides=overrides
    )
    if not args.json:
        title = Path(args.data).name or str(args.data)
        print(format_table({title: result["metrics"]}, counts={title: result["confusion_matrix"]}))
        print(
            f"\n{result['model']} (version {result['model_version']}) at threshold "
            f"{result['threshold']:.3f}; {result['confidence']:.0%} intervals: Wilson for proportions, "
            "percentile bootstrap for AUC.\n"
        )
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


__all__ = [
    "champion_table",
    "gate_rule",
    "evaluate_command",
    "evaluate_registered_model",
    "predict_command",
    "promote_command",
]
