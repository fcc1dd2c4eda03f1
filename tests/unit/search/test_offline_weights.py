"""Offline, a study tries the ImageNet download once: later trials start from random weights."""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner
import optuna
import pytest

from clot_hpo.models.hypermodel import ClotHyperModel
from clot_hpo.search.trial.phases import known_weights_failure, remember_weights_failure


class _FixedSpace:
    """A search space of one fixed 32 px EfficientNetB1 (the smallest side it builds at)."""

    def sample(self, hp: Any, prefix: str = "") -> dict[str, Any]:
        return {"image_size": 32}


def _build_trial_model(study: optuna.Study) -> ClotHyperModel:
    """What a trial process does: read the study's record, build, record a failure."""
    hypermodel = ClotHyperModel({"efficientnet_b1": _FixedSpace()}, weights="imagenet")
    hypermodel.imagenet_unavailable = known_weights_failure(study)
    hypermodel.build(keras_tuner.HyperParameters())
    remember_weights_failure(study, hypermodel.weights_used)
    return hypermodel


def test_a_failed_download_is_tried_once_per_study(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []

    def offline(*args: object, **kwargs: object) -> None:
        attempts.append("download")
        # What keras.utils.get_file raises when the download host is unreachable.
        raise Exception("URL fetch failure on https://example.invalid: None -- [Errno -2]")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.efficientnet.file_utils.get_file", offline)
    study = optuna.create_study()

    first = _build_trial_model(study)
    assert attempts == ["download"]
    assert first.weights_used is not None and first.weights_used.startswith("none (imagenet unavailable")
    assert known_weights_failure(study) == first.weights_used

    second = _build_trial_model(study)
    third = _build_trial_model(study)
    assert attempts == ["download"]  # not tried again
    assert second.weights_used == third.weights_used == first.weights_used
    assert not second.pretrained


def test_a_study_without_a_failure_remembers_nothing() -> None:
    study = optuna.create_study()
    assert not remember_weights_failure(study, "none (random initialization)")
    assert not remember_weights_failure(study, "imagenet")
    assert known_weights_failure(study) is None
    assert remember_weights_failure(study, "none (imagenet unavailable: URL fetch failure)")
    assert not remember_weights_failure(study, "none (imagenet unavailable: another reason)")
    assert known_weights_failure(study) == "none (imagenet unavailable: URL fetch failure)"
