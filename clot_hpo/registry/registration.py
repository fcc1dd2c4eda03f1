"""Registering the chosen trial's model as a version (once per run), with what its trial recorded."""

from __future__ import annotations

from typing import Any

from clot_hpo.registry.candidates import PromotionCandidate
from clot_hpo.registry.outcome import PromotionResult
from clot_hpo.tracking.store import MlflowClient, MlflowException, is_already_exists, quote
from clot_hpo.tracking.tags import (
    TAG_DIGEST,
    TAG_IMAGE_SIZE,
    TAG_MODEL_SHA256,
    TAG_STUDY,
    TAG_THRESHOLD,
    TAG_TRIAL_NUMBER,
)
from clot_hpo.util import finite_float

MODEL_DESCRIPTION = "Binary blood-clot classifier (input: raw RGB pixels in [0, 255])."


def _version_tags(cand: PromotionCandidate, experiment: str, metric: str) -> dict[str, str]:
    tags = cand.run.data.tags
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
    if tags.get(TAG_DIGEST):
        out["dataset_digest"] = tags[TAG_DIGEST]
    for key, value in cand.run.data.metrics.items():
        if key.startswith(("val_", "test_")) and "_ci_" not in key and finite_float(value) is not None:
            out[key] = repr(float(value))
    return out


def _existing_version(client: MlflowClient, model_name: str, run_id: str) -> Any | None:
    try:
        versions = client.search_model_versions(f"name = {quote(model_name)} and run_id = {quote(run_id)}")
    except MlflowException:
        return None
    return min(versions, key=lambda v: int(v.version)) if versions else None


def register(
    client: MlflowClient, best: PromotionCandidate, experiment: str, result: PromotionResult
) -> None:
    """Reuse the candidate's version if it has one, else create it with its model's sha256.

    The sha256 is the one the trial recorded in the Optuna storage (the downloaded file was
    checked against it: :func:`~clot_hpo.registry.verification.verify_outputs`). Fills
    ``result.version``.
    """
    existing = _existing_version(client, result.model_name, result.run_id)
    if existing is not None:
        result.version = str(existing.version)
        result.messages.append(
            f"already registered as {result.model_name} version {result.version}: no new version"
        )
        return
    try:
        client.create_registered_model(result.model_name, description=MODEL_DESCRIPTION)
    except MlflowException as exc:
        if not is_already_exists(exc):
            raise
    tags = _version_tags(best, experiment, result.metric)
    tags[TAG_MODEL_SHA256] = str(best.vouched.model_sha256)
    version = client.create_model_version(
        result.model_name,
        source=f"models:/{best.model_id}",
        run_id=result.run_id,
        tags=tags,
        model_id=best.model_id,
        description=f"trial {result.trial_number} of study {result.study}",
    )
    result.version, result.registered = str(version.version), True
    result.messages.append(f"registered {result.model_name} version {result.version}")


__all__ = ["MODEL_DESCRIPTION", "register"]
