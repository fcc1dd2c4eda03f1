"""The model registry: promote the best trial, and use a registered model.

* :func:`promote` registers the best finished trial of an experiment as a new version of
  ``blood-clot-detector`` and moves the alias ``champion`` to it only when it beats the
  current champion on the same metric. Registry stages are deprecated in MLflow: aliases only.
* :func:`predict_command` and :func:`evaluate_command` load a registered model
  (``models:/blood-clot-detector@champion`` by default) and apply it with the decision
  threshold and image size stored with it.

Runs and models are found by the tags :mod:`clot_hpo.tracking.mlflow_tracker` writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Before MLflow is imported: no usage telemetry leaves the machine, and no download progress
# bars clutter predict's output.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from clot_hpo.errors import ConfigError, DataError  # noqa: E402
from clot_hpo.tracking.mlflow_tracker import (  # noqa: E402
    TAG_DIGEST,
    TAG_IMAGE_SIZE,
    TAG_MODEL_ID,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STUDY,
    TAG_THRESHOLD,
    TAG_TRIAL_NUMBER,
    MlflowTracker,
    _quote,
    _sqlite_path,
    global_tracking_uri,
)

log = logging.getLogger("clot_hpo.registry")

DEFAULT_MODEL_NAME = "blood-clot-detector"
DEFAULT_ALIAS = "champion"
DEFAULT_METRIC = "val_auc"
DEFAULT_THRESHOLD = 0.5
PREDICT_CHUNK = 256  # images loaded and predicted at a time (bounded memory on big folders)
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


def lower_is_better(metric: str) -> bool:
    """Direction of a metric: losses, Brier score and ECE go down, everything else up."""
    name = metric.lower()
    return "loss" in name or name.endswith(("brier", "ece"))


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _client(tracking_uri: str) -> MlflowClient:
    """A client for ``tracking_uri`` (also the registry), after a quick reachability check."""
    if tracking_uri.startswith(("http://", "https://")):
        MlflowTracker._check_http_health(tracking_uri)
    else:
        db = _sqlite_path(tracking_uri)
        if db is not None and not db.expanduser().exists():
            raise ConfigError(f"no MLflow store at {tracking_uri}: {db} does not exist (run a search first)")
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


# ----- promotion ----------------------------------------------------------------------------
@dataclass
class PromotionResult:
    """What :func:`promote` did (``messages`` says it in words)."""

    model_name: str
    alias: str
    metric: str
    version: str
    run_id: str
    value: float
    study: str | None = None
    trial_number: int | None = None
    registered: bool = False  # a new version was created
    alias_moved: bool = False
    previous_version: str | None = None
    previous_value: float | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """Every message, one per line."""
        return "\n".join(self.messages)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class _Candidate:
    run: Any
    value: float
    model_id: str

    @property
    def trial_number(self) -> int | None:
        raw = self.run.data.tags.get(TAG_TRIAL_NUMBER)
        return int(raw) if raw is not None and raw.lstrip("-").isdigit() else None


def _search_all_runs(client: MlflowClient, exp_id: str, filter_string: str) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_runs([exp_id], filter_string=filter_string, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _model_id_of(run: Any) -> str | None:
    model_id = run.data.tags.get(TAG_MODEL_ID)
    if model_id:
        return model_id
    outputs = getattr(run, "outputs", None)
    models = getattr(outputs, "model_outputs", None) or []
    return models[-1].model_id if models else None


def _candidates(client: MlflowClient, exp_id: str, metric: str) -> tuple[list[_Candidate], int]:
    """Finished trial runs with the metric and a logged model, best first; and how many finished."""
    finished = list(_search_all_runs(
        client, exp_id, f"tags.`{TAG_ROLE}` = 'trial' and attributes.status = 'FINISHED'"))
    out = []
    for run in finished:
        value = _finite(run.data.metrics.get(metric))
        model_id = _model_id_of(run)
        if value is not None and model_id:
            out.append(_Candidate(run=run, value=value, model_id=model_id))
    sign = 1.0 if lower_is_better(metric) else -1.0
    out.sort(key=lambda c: (sign * c.value, c.trial_number if c.trial_number is not None else 1 << 30))
    return out, len(finished)


def _ready(client: MlflowClient, model_id: str) -> bool:
    try:
        model = client.get_logged_model(model_id)
    except MlflowException:
        return False
    return str(getattr(model.status, "name", model.status)).upper() == "READY"


def _version_tags(client: MlflowClient, cand: _Candidate, experiment: str, metric: str) -> dict[str, str]:
    tags = cand.run.data.tags
    digest = tags.get(TAG_DIGEST)
    if not digest and tags.get(TAG_PARENT):
        try:
            digest = client.get_run(tags[TAG_PARENT]).data.tags.get(TAG_DIGEST)
        except MlflowException:
            digest = None
    out = {
        "experiment": experiment,
        "study": tags.get(TAG_STUDY, experiment),
        "trial": tags.get(TAG_TRIAL_NUMBER, ""),
        "promotion_metric": metric,
        metric: repr(cand.value),
    }
    for key in (TAG_THRESHOLD, TAG_IMAGE_SIZE):
        if key in tags:
            out[key] = tags[key]
    if digest:
        out["dataset_digest"] = digest
    for key, value in cand.run.data.metrics.items():
        if key.startswith(("val_", "test_")) and "_ci_" not in key and _finite(value) is not None:
            out[key] = repr(float(value))
    return out


def _existing_version(client: MlflowClient, model_name: str, run_id: str) -> Any | None:
    try:
        versions = client.search_model_versions(
            f"name = {_quote(model_name)} and run_id = {_quote(run_id)}")
    except MlflowException:
        return None
    return min(versions, key=lambda v: int(v.version)) if versions else None


def _current_alias(client: MlflowClient, model_name: str, alias: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in _NOT_FOUND:
            return None
        raise


def _champion_value(client: MlflowClient, version: Any, metric: str) -> float | None:
    """The champion's own value of ``metric``: from its run, else from its version tags."""
    if version.run_id:
        try:
            value = _finite(client.get_run(version.run_id).data.metrics.get(metric))
        except MlflowException:
            value = None
        if value is not None:
            return value
    return _finite((version.tags or {}).get(metric))


def promote(
    tracking_uri: str,
    experiment: str,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    alias: str = DEFAULT_ALIAS,
    metric: str = DEFAULT_METRIC,
) -> PromotionResult:
    """Register the experiment's best finished trial and move ``alias`` to it if it wins.

    The best trial is the FINISHED child run with a finite ``metric`` and a logged model
    (higher is better, except for ``*loss*``, ``*brier`` and ``*ece``; ties go to the
    lower trial number). If that run is already registered, its version is reused
    (running this twice changes nothing). The alias moves only when the candidate is
    strictly better than the current holder on the same metric.

    Raises:
        ConfigError: the experiment does not exist, or has no finished trial with the
            metric and a logged model.
    """
    client = _client(tracking_uri)
    # MLflow's SQL registry store resolves `models:/<model_id>` sources through a client built
    # from the process-wide tracking URI, so that URI must be ours during the promotion.
    with global_tracking_uri(tracking_uri):
        return _promote(client, tracking_uri, experiment, model_name=model_name, alias=alias, metric=metric)


def _promote(client: MlflowClient, tracking_uri: str, experiment: str, *, model_name: str, alias: str,
             metric: str) -> PromotionResult:
    exp = client.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments(max_results=50))
        raise ConfigError(f"MLflow experiment {experiment!r} does not exist at {tracking_uri} "
                          f"(experiments there: {names})")
    candidates, n_finished = _candidates(client, exp.experiment_id, metric)
    best = next((c for c in candidates if _ready(client, c.model_id)), None)
    if best is None:
        raise ConfigError(
            f"experiment {experiment!r} has no finished trial with metric {metric!r} and a logged "
            f"model ({n_finished} finished trial run{'s' if n_finished != 1 else ''})"
        )
    run_id = best.run.info.run_id
    result = PromotionResult(
        model_name=model_name, alias=alias, metric=metric, version="", run_id=run_id, value=best.value,
        study=best.run.data.tags.get(TAG_STUDY), trial_number=best.trial_number,
    )
    say = result.messages.append
    say(f"best trial: {result.trial_number} of {experiment!r} ({metric} = {best.value:.4f}, run {run_id})")

    existing = _existing_version(client, model_name, run_id)
    if existing is not None:
        result.version = str(existing.version)
        say(f"already registered as {model_name} version {result.version}: no new version")
    else:
        try:
            client.create_registered_model(
                model_name, description="Binary blood-clot classifier (input: raw RGB pixels in [0, 255]).")
        except MlflowException as exc:
            if getattr(exc, "error_code", "") not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        version = client.create_model_version(
            model_name, source=f"models:/{best.model_id}", run_id=run_id,
            tags=_version_tags(client, best, experiment, metric), model_id=best.model_id,
            description=f"trial {result.trial_number} of study {result.study}",
        )
        result.version, result.registered = str(version.version), True
        say(f"registered {model_name} version {result.version}")

    current = _current_alias(client, model_name, alias)
    if current is not None and str(current.version) == result.version:
        result.previous_version, result.previous_value = result.version, best.value
        say(f"alias {alias!r} already points to version {result.version}: nothing to move")
        return result
    if current is None:
        client.set_registered_model_alias(model_name, alias, result.version)
        result.alias_moved = True
        say(f"alias {alias!r} set to version {result.version} (there was no {alias})")
        return result
    result.previous_version = str(current.version)
    result.previous_value = _champion_value(client, current, metric)
    prev = result.previous_value
    if prev is None:
        client.set_registered_model_alias(model_name, alias, result.version)
        result.alias_moved = True
        say(f"alias {alias!r} moved from version {current.version} (which has no {metric}) "
            f"to version {result.version}")
        return result
    wins = best.value < prev if lower_is_better(metric) else best.value > prev
    if wins:
        client.set_registered_model_alias(model_name, alias, result.version)
        result.alias_moved = True
        say(f"alias {alias!r} moved from version {current.version} ({metric} = {prev:.4f}) to version "
            f"{result.version} ({metric} = {best.value:.4f})")
    else:
        say(f"alias {alias!r} stays on version {current.version}: its {metric} = {prev:.4f} is not beaten "
            f"by {best.value:.4f}")
    digest_new = client.get_model_version(model_name, result.version).tags.get("dataset_digest")
    digest_old = (current.tags or {}).get("dataset_digest")
    if digest_new and digest_old and digest_new != digest_old:
        say("note: the two versions were evaluated on different datasets (dataset digests differ)")
    return result


def promote_command(args: argparse.Namespace) -> int:
    """``clot-hpo promote``: print what happened, one line each."""
    result = promote(args.tracking_uri, args.experiment, model_name=args.model_name, alias=args.alias,
                     metric=args.metric)
    for line in result.messages:
        print(line)
    return 0


# ----- using a registered model -------------------------------------------------------------
@dataclass
class ResolvedModel:
    """A model URI made concrete: what to load and how to apply it."""

    uri: str  # as the user gave it
    load_uri: str  # what MLflow loads (an alias resolved to its version)
    name: str | None
    version: str | None
    run_id: str | None
    threshold: float
    image_size: int


_MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")  # a logged model's id, as in models:/<model_id>
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?/?$")


def _tag_sources(client: MlflowClient, version: Any | None, run_id: str | None,
                 model_id: str | None) -> list[dict[str, str]]:
    sources: list[dict[str, str]] = []
    if version is not None:
        sources.append(dict(version.tags or {}))
    if run_id:
        try:
            sources.append(dict(client.get_run(run_id).data.tags))
        except MlflowException:
            pass
    if model_id:
        try:
            sources.append(dict(client.get_logged_model(model_id).tags or {}))
        except MlflowException:
            pass
    return sources


def resolve_model(client: MlflowClient, tracking_uri: str, model_uri: str) -> ResolvedModel:
    """Resolve ``models:/name@alias``, ``models:/name/version``, ``models:/<model_id>`` or ``runs:/``.

    The threshold and image size come from the version's tags, else the run's, else the
    logged model's; the image size falls back to the model signature.

    Raises:
        ConfigError: the registered model, version or alias does not exist.
    """
    name = version_str = run_id = model_id = None
    version = None
    load_uri = model_uri
    match = _MODELS_URI.match(model_uri)
    if match and _MODEL_ID.match(match["name"]) and not match["alias"] and not match["version"]:
        model_id = match["name"]
        try:
            run_id = client.get_logged_model(model_id).source_run_id
        except MlflowException as exc:
            raise ConfigError(f"logged model {model_id!r} does not exist at {tracking_uri}") from exc
    elif match:
        name = match["name"]
        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            raise ConfigError(f"registered model {name!r} does not exist at {tracking_uri} "
                              "(run `clot-hpo promote` first)") from exc
        if match["alias"]:
            version = _current_alias(client, name, match["alias"])
            if version is None:
                raise ConfigError(f"model alias {match['alias']!r} of {name!r} is not set at {tracking_uri} "
                                  "(run `clot-hpo promote` first)")
        else:
            ref = match["version"]
            if ref is None:
                raise ConfigError(f"{model_uri!r}: name a version or an alias (models:/{name}@champion)")
            try:
                version = client.get_model_version(name, ref)
            except MlflowException as exc:
                raise ConfigError(f"version {ref!r} of registered model {name!r} does not exist at "
                                  f"{tracking_uri}") from exc
        version_str, run_id, model_id = str(version.version), version.run_id, getattr(version, "model_id", None)
        load_uri = f"models:/{name}/{version_str}"
    elif model_uri.startswith("runs:/"):
        run_id = model_uri.split("/", 2)[1] if model_uri.count("/") >= 2 else ""
        try:
            client.get_run(run_id)
        except MlflowException as exc:
            raise ConfigError(f"run {run_id!r} of {model_uri!r} does not exist at {tracking_uri}") from exc
    sources = _tag_sources(client, version, run_id, model_id)

    def first(key: str) -> str | None:
        return next((s[key] for s in sources if s.get(key) not in (None, "")), None)

    threshold = _finite(first(TAG_THRESHOLD))
    if threshold is None:
        log.warning("no decision threshold stored with %s; using %.2f", model_uri, DEFAULT_THRESHOLD)
        threshold = DEFAULT_THRESHOLD
    size_raw = first(TAG_IMAGE_SIZE)
    image_size = int(float(size_raw)) if size_raw else _signature_image_size(tracking_uri, load_uri)
    return ResolvedModel(uri=model_uri, load_uri=load_uri, name=name, version=version_str, run_id=run_id,
                         threshold=threshold, image_size=image_size)


def _signature_image_size(tracking_uri: str, load_uri: str) -> int:
    with global_tracking_uri(tracking_uri):
        info = mlflow.models.get_model_info(load_uri)
    shape = info.signature.inputs.inputs[0].shape if info.signature else None
    if not shape or len(shape) != 4 or shape[1] is None or shape[1] < 1:
        raise ConfigError(f"{load_uri}: no image size stored with the model and none in its signature")
    return int(shape[1])


def load_keras_model(tracking_uri: str, resolved: ResolvedModel) -> Any:
    """The Keras model behind ``resolved`` (``mlflow.keras.load_model``)."""
    import mlflow.keras

    with global_tracking_uri(tracking_uri):
        return mlflow.keras.load_model(resolved.load_uri)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict_probabilities(model: Any, paths: Sequence[Path | str], image_size: int) -> list[float]:
    """Positive-class probabilities of image files, through the data layer's loader."""
    from clot_hpo.data import load_image_batch

    out: list[float] = []
    for chunk in _chunks(list(paths), PREDICT_CHUNK):
        batch = load_image_batch([str(p) for p in chunk], image_size)
        probs = model.predict(batch, batch_size=32, verbose=0)
        out.extend(float(v) for v in probs.reshape(len(chunk), -1)[:, 0])
    return out


def predict_command(args: argparse.Namespace) -> int:
    """``clot-hpo predict``: one JSON line per image, ``{"image", "probability", "label"}``.

    ``label`` is 1 (clot) when ``probability >= threshold`` (the model's stored threshold),
    else 0. Missing paths and non-images are a ``DataError`` (exit 2) naming them.
    """
    from clot_hpo.data import list_images

    files = list_images(args.paths)  # DataError (exit 2) names missing paths and non-images
    client = _client(args.tracking_uri)
    resolved = resolve_model(client, args.tracking_uri, args.model)
    model = load_keras_model(args.tracking_uri, resolved)
    for chunk in _chunks(files, PREDICT_CHUNK):
        for path, prob in zip(chunk, predict_probabilities(model, chunk, resolved.image_size), strict=True):
            line = {"image": str(path), "probability": round(prob, 6), "label": int(prob >= resolved.threshold)}
            sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
    return 0


def evaluate_model(tracking_uri: str, model_uri: str, data: str, *, config_path: str | None = None,
                   confidence: float = 0.95, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metrics (with intervals) of a registered model on a labelled dataset folder."""
    from clot_hpo.config import DataConfig, load_config
    from clot_hpo.data import scan_dataset
    from clot_hpo.evaluate import binary_metrics, confusion_counts

    if config_path:
        cfg = load_config(config_path)
        data_cfg = cfg.data.model_copy(update={"path": str(data)})
        confidence, n_bootstrap = cfg.evaluation.confidence_level, cfg.evaluation.bootstrap_samples
    else:
        data_cfg = DataConfig(path=str(data))
    table = scan_dataset(data_cfg, root=Path(data))
    if len(table) == 0:
        raise DataError(f"{data}: no labelled images found")
    client = _client(tracking_uri)
    resolved = resolve_model(client, tracking_uri, model_uri)
    model = load_keras_model(tracking_uri, resolved)
    labels = [int(v) for v in table["label"]]
    probs = predict_probabilities(model, list(table["path"]), resolved.image_size)
    metrics = binary_metrics(labels, probs, threshold=resolved.threshold, confidence=confidence,
                             n_bootstrap=n_bootstrap, seed=seed)
    return {
        "model": model_uri,
        "model_version": resolved.version,
        "run_id": resolved.run_id,
        "data": str(data),
        "n": len(labels),
        "threshold": resolved.threshold,
        "image_size": resolved.image_size,
        "confidence": confidence,
        "metrics": metrics,
        "confusion_matrix": confusion_counts(labels, probs, resolved.threshold),
    }


def evaluate_command(args: argparse.Namespace) -> int:
    """``clot-hpo evaluate``: the product's table as Markdown, then as JSON (``--json``: JSON only)."""
    from clot_hpo.evaluate import format_table

    result = evaluate_model(args.tracking_uri, args.model, args.data, config_path=args.config)
    if not args.json:
        title = Path(args.data).name or str(args.data)
        print(format_table({title: result["metrics"]}, counts={title: result["confusion_matrix"]}))
        print(f"\n{result['model']} (version {result['model_version']}) at threshold "
              f"{result['threshold']:.3f}; {result['confidence']:.0%} intervals: Wilson for proportions, "
              "percentile bootstrap for AUC.\n")
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


__all__ = [
    "PromotionResult",
    "ResolvedModel",
    "evaluate_command",
    "evaluate_model",
    "load_keras_model",
    "lower_is_better",
    "predict_command",
    "promote",
    "promote_command",
    "resolve_model",
]
