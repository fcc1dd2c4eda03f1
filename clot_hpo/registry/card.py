"""The model card of a registered version (after Mitchell et al., 2019, "Model Cards for Model Reporting").

``promote`` builds it from the facts the study recorded, never from boilerplate: the trial's
run (parameters, metrics with intervals, tags, ``test_predictions.csv``), its study as the one
reader returns it (:func:`clot_hpo.tracking.study_reader.read_study`: the validated config,
the split manifest and the data report, when logged), the
trial as the Optuna storage holds it (weights used, VRAM plan, timings) and the model file
itself (its sha256 and parameter count, read from the ``.keras`` archive without Keras).
What was not recorded is said to be "not recorded", so a reader knows it is missing.

Written as ``model_card.json`` (the facts) on the version's run, beside ``model_card.md`` (the
same, for people) and the short form set as the version's description, which the MLflow
registry page shows: both laid out by :mod:`clot_hpo.registry.card_document`.
"""

from __future__ import annotations

import copy
import json
import math
import zipfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from clot_hpo.config.schema import EvaluationConfig, ExperimentConfig
from clot_hpo.evaluate.catalogue import CI_HIGH, CI_LOW, format_interval, interval_note, table_metrics
from clot_hpo.util import file_sha256, finite_float

if TYPE_CHECKING:
    from clot_hpo.tracking.study_reader import FinishedStudy

CARD_MD = "model_card.md"
CARD_JSON = "model_card.json"
SMALL_TEST_SET = 500  # fewer test images than this: say how wide the intervals are
WEIGHTS_MEMBER = "model.weights.h5"


# ----- facts from files ---------------------------------------------------------------------
def keras_parameter_count(keras_file: Path) -> int | None:
    """Numbers stored in a ``.keras`` archive's weights (trainable and not), without Keras.

    None when the archive or its HDF5 weights cannot be read.
    """
    try:
        import h5py  # type: ignore[import-untyped]  # Keras's own dependency, no stubs
    except ImportError:
        return None
    total = 0
    try:
        with (
            zipfile.ZipFile(keras_file) as archive,
            archive.open(WEIGHTS_MEMBER) as raw,
            h5py.File(raw, "r") as h5,
        ):

            def visit(name: str, obj: Any) -> None:
                nonlocal total
                # A compiled model's file may also hold its optimizer's state: not parameters.
                if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer"):
                    total += int(obj.size)

            h5.visititems(visit)
    except (OSError, KeyError, zipfile.BadZipFile):
        return None
    return total


def manifest_facts(manifest: pd.DataFrame | None) -> dict[str, Any]:
    """Counts per split and class, and whether groups were kept together, from the split manifest."""
    if manifest is None or manifest.empty or "split" not in manifest.columns:
        return {}
    counts: dict[str, dict[str, int]] = {}
    for split, frame in manifest.groupby("split"):
        labels = frame["label"].astype(int) if "label" in frame.columns else pd.Series(dtype=int)
        counts[str(split)] = {"positive": int((labels == 1).sum()), "negative": int((labels == 0).sum())}
    if "group" not in manifest.columns:
        # The tracked manifest leaves group ids out by default (patient identifiers): unknown here.
        return {"counts": counts, "n_images": int(len(manifest)), "grouped": None, "n_groups": None}
    groups = manifest["group"].dropna()
    return {
        "counts": counts,
        "n_images": int(len(manifest)),
        "grouped": bool(len(groups) > 0),
        "n_groups": int(groups.nunique()) if len(groups) else None,
    }


def calibration_facts(predictions: pd.DataFrame | None) -> dict[str, Any]:
    """ECE and Brier score recomputed from ``test_predictions.csv``."""
    from clot_hpo.evaluate.metrics import expected_calibration_error  # heavy: only when a card is built

    if predictions is None or predictions.empty:
        return {}
    y = predictions["label"].to_numpy(dtype=np.int64)
    p = predictions["probability"].to_numpy(dtype=np.float64)
    return {
        "ece": expected_calibration_error(y, p),
        "brier": float(np.mean((p - y) ** 2)),
        "n": int(y.size),
        "source": "test_predictions.csv",
    }


# ----- the card -------------------------------------------------------------------------------
def _num(value: Any) -> float | None:
    number = finite_float(value)
    return None if number is None or math.isnan(number) else number


def _metric_rows(metrics: dict[str, float], split: str) -> dict[str, dict[str, float | None]]:
    """The catalogue's table metrics the run logged on ``split``, by name."""
    rows = {}
    for metric in table_metrics():
        key = metric.key(split)
        point = _num(metrics.get(key))
        if point is None:
            continue
        rows[metric.name] = {
            "value": point,
            "ci_low": _num(metrics.get(key + CI_LOW)),
            "ci_high": _num(metrics.get(key + CI_HIGH)),
        }
    return rows


def _caveats(card: dict[str, Any]) -> list[str]:
    """Limits written from this model's facts."""
    out = []
    data = card["training_data"]
    details = card["model_details"]
    if data.get("synthetic"):
        out.append(
            "Trained and tested on synthetic images generated by clot-hpo (data.synthetic in the study's "
            "config): its figures say nothing about performance on real clinical images."
        )
    weights = str(details.get("weights_used") or "")
    if weights in ("none", "random") or weights.startswith("none"):
        out.append(
            "The backbone started from random initialisation (no pretrained weights): with a small "
            "training set, features are learned from these images alone."
        )
    test = card["evaluation_data"]
    n_test = test.get("n_images")
    if n_test is not None and n_test < SMALL_TEST_SET:
        pos = test.get("positive")
        sens = card["metrics"]["test"].get("sensitivity", {})
        width = (
            f" (sensitivity interval {format_interval(sens['ci_low'], sens['ci_high'])})"
            if sens.get("ci_low") is not None and sens.get("ci_high") is not None
            else ""
        )
        out.append(
            f"Small test set: {n_test} images"
            + (f", {pos} with a clot" if pos is not None else "")
            + f"; intervals are wide{width} and rare failure modes may not appear at all."
        )
    if data.get("grouped") is False:
        out.append(
            "The split did not keep patients (groups) together: images of one patient may sit in both "
            "training and test, which flatters the test figures."
        )
    leakage = data.get("leakage") or {}
    if leakage.get("has_leakage"):
        out.append(
            f"Duplicates cross splits: {leakage.get('n_exact', 0)} exact and {leakage.get('n_near', 0)} "
            "near-duplicate pairs (leakage report): test figures may be optimistic."
        )
    ece = card["calibration"].get("ece")
    if ece is not None and ece > 0.1:
        out.append(f"Poorly calibrated on test (ECE {ece:.3f}): read the probability as a score, not a risk.")
    out.append(
        "No subgroup analysis (site, scanner, sex, age) is recorded for this model: performance on any "
        "subgroup is unknown."
    )
    return out


INTENDED_USE: dict[str, Any] = {
    "primary": (
        "Research tool: ranking and comparing blood-clot image classifiers built by a "
        "hyperparameter search, on data like its training data."
    ),
    "out_of_scope": [
        "Diagnosis or triage of patients: this is not a medical device and has no regulatory clearance.",
        "Images from other modalities, sites, scanners or preprocessing than the training data.",
        "Reading the probability as a calibrated risk without checking calibration on local data.",
    ],
}


def _clot_hpo_version() -> str:
    try:
        return metadata.version("clot-hpo")
    except metadata.PackageNotFoundError:
        return "unknown"


def _model_details(
    run: Any, trial_attrs: dict[str, Any], requirements: list[str], **given: Any
) -> dict[str, Any]:
    """Which model: name, version, run, trial, backbone, input, weights, file, code, environment."""
    params, tags = dict(run.data.params), dict(run.data.tags)
    image_size = params.get("image_size") or tags.get("image_size")
    return {
        "name": given["model_name"],
        "version": given["version"],
        "run_id": run.info.run_id,
        "model_id": given["model_id"],
        "study": tags.get("clot_hpo.study"),
        "trial": tags.get("optuna.trial_number"),
        "backbone": params.get("backbone"),
        "input": {
            "image_size": int(str(image_size)) if str(image_size or "").isdigit() else image_size,
            "channels": 3,
            "range": "raw RGB pixels in [0, 255]; the model rescales them itself",
        },
        "weights_used": trial_attrs.get("weights_used") or params.get("weights") or "not recorded",
        "parameters": given["parameter_count"],
        "model_file_sha256": given["model_sha256"],
        "hyperparameters": {k: v for k, v in sorted(params.items())},
        "code": {
            "git_commit": tags.get("mlflow.source.git.commit")
            or tags.get("clot_hpo.git_commit")
            or "not recorded by the run",
            "clot_hpo_version_at_promotion": _clot_hpo_version(),
        },
        "environment": requirements,
    }


def _training_data(study: FinishedStudy | None, dataset_digest: str | None) -> dict[str, Any]:
    """Where the images came from, how they were split, and what the leakage check found."""
    config = study.config if study is not None else None
    report = study.data_report if study is not None else {}
    split_facts = manifest_facts(study.manifest if study is not None else None)
    return {
        "dataset_digest": dataset_digest or "not recorded",
        "source_path": (config.data.path if config else None) or report.get("source") or "not recorded",
        "layout": report.get("layout") or (config.data.layout if config else None),
        # `data.synthetic` set (even to its defaults) means make_synthetic made the images.
        "synthetic": config.data.synthetic is not None if config else None,
        "counts": split_facts.get("counts") or report.get("counts") or {},
        "split": {
            "val_fraction": config.data.val_fraction if config else report.get("val_fraction"),
            "test_fraction": config.data.test_fraction if config else report.get("test_fraction"),
            "seed": config.seed if config else report.get("seed"),
        },
        # The data report says how the split was made; the manifest only what it holds.
        "grouped": report["grouped"] if "grouped" in report else split_facts.get("grouped"),
        "n_groups": split_facts.get("n_groups"),
        "leakage": report.get("leakage")
        and {k: report["leakage"].get(k) for k in ("has_leakage", "n_exact", "n_near", "within_split_exact")},
    }


def _evaluation_data(test_predictions: pd.DataFrame | None, counts: dict[str, Any]) -> dict[str, Any]:
    """The test split: its size and classes, from the predictions file, else the split's counts."""
    test_counts = counts.get("test") or {}
    if test_predictions is None:
        n_images, positive, negative = (
            sum(test_counts.values()) or None,
            test_counts.get("positive"),
            test_counts.get("negative"),
        )
    else:
        labels = test_predictions["label"]
        n_images, positive, negative = len(test_predictions), int(labels.sum()), int((labels == 0).sum())
    return {
        "split": "test (held out from the search; the threshold was chosen on validation)",
        "n_images": n_images,
        "positive": positive,
        "negative": negative,
        "predictions": "test_predictions.csv (key = content hash of each image)"
        if test_predictions is not None
        else "not recorded",
    }


def _metrics(evaluation: EvaluationConfig, metrics: dict[str, float]) -> dict[str, Any]:
    """The catalogue's metrics on test and validation, with how their intervals were computed."""
    return {
        "confidence": evaluation.confidence_level,
        "intervals": interval_note(
            evaluation.confidence_level, evaluation.bootstrap_samples, evaluation.prevalence
        ),
        # PPV and NPV are taken at this prevalence (None: the test split's own).
        "prevalence": evaluation.prevalence,
        "test": _metric_rows(metrics, "test"),
        "validation": _metric_rows(metrics, "val"),
    }


def _threshold(config: ExperimentConfig | None, run: Any) -> dict[str, Any]:
    """The decision threshold and the rule that chose it on validation."""
    metrics, tags = run.data.metrics, run.data.tags
    method = config.evaluation.threshold if config else None
    return {
        "value": _num(metrics.get("threshold")) or _num(tags.get("threshold")),
        "method": method or "not recorded",
        "target_sensitivity": config.evaluation.target_sensitivity
        if config and method == "target_sensitivity"
        else None,
        "chosen_on": "validation split",
    }


def _training(run: Any, trial_attrs: dict[str, Any]) -> dict[str, Any]:
    """How the trial trained: epochs, batch, precision, its VRAM plan and timings."""
    params, metrics = run.data.params, run.data.metrics
    budget = {k.removeprefix("budget_"): v for k, v in trial_attrs.items() if k.startswith("budget_")}
    timings = {k: v for k, v in metrics.items() if k.startswith("time_") and k.endswith("_s")}
    return {
        "epochs": params.get("epochs"),
        "epochs_run": trial_attrs.get("epochs_run", _num(metrics.get("epochs_run"))),
        "batch_size": params.get("batch_size_run") or params.get("batch_size"),
        "accumulation_steps": params.get("accumulation_steps"),
        "mixed_precision": params.get("mixed_precision"),
        "vram_plan": budget or "not recorded",
        "time_s": timings or "not recorded",
    }


def build_card(
    *,
    model_name: str,
    version: str,
    run: Any,
    model_id: str | None,
    study: FinishedStudy | None,
    trial_attrs: dict[str, Any],
    model_sha256: str | None,
    parameter_count: int | None,
    requirements: list[str],
    test_predictions: pd.DataFrame | None,
    decision: dict[str, str] | None,
    dataset_digest: str | None,
) -> dict[str, Any]:
    """The card's facts as a JSON-ready dict (sections after Mitchell et al. 2019).

    ``study`` is the trial's study as :func:`clot_hpo.tracking.study_reader.read_study` read it
    (None: it could not be read); what its config does not record is said to be so.
    """
    metrics = dict(run.data.metrics)
    config = study.config if study is not None else None
    training_data = _training_data(study, dataset_digest)
    details = _model_details(
        run,
        trial_attrs,
        requirements,
        model_name=model_name,
        version=version,
        model_id=model_id,
        parameter_count=parameter_count,
        model_sha256=model_sha256,
    )
    card: dict[str, Any] = {
        "model_details": details,
        "intended_use": copy.deepcopy(INTENDED_USE),
        "training_data": training_data,
        "evaluation_data": _evaluation_data(test_predictions, training_data["counts"]),
        # The schema's defaults for what the study's config does not record.
        "metrics": _metrics((config or ExperimentConfig()).evaluation, metrics),
        "calibration": calibration_facts(test_predictions)
        or {
            "ece": _num(metrics.get("test_ece")),
            "brier": _num(metrics.get("test_brier")),
            "source": "run metrics",
        },
        "threshold": _threshold(config, run),
        "training": _training(run, trial_attrs),
        "promotion": decision or {},
    }
    card["caveats"] = _caveats(card)
    return card


def card_json(card: dict[str, Any]) -> str:
    """``model_card.json``: the facts, sorted keys, no NaN."""
    return json.dumps(card, indent=2, sort_keys=True, default=str, allow_nan=False)


__all__ = [
    "CARD_JSON",
    "CARD_MD",
    "build_card",
    "calibration_facts",
    "card_json",
    "file_sha256",
    "keras_parameter_count",
    "manifest_facts",
]
