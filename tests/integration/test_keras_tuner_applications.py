"""KerasTuner's bundled application builders under OptunaHyperParameters.

``HyperResNet``, ``HyperXception`` and ``HyperEfficientNet`` (without weights: nothing to
download) run for two trials each, their declared defaults first, as KerasTuner's tuners do.
They build whole backbones, so they live here rather than with the other compatibility
checks in tests/unit/search/test_keras_tuner_compat.py, whose helpers they use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras
import keras_tuner as kt
import pytest
from keras_tuner.src.applications import efficientnet as kt_efficientnet

from clot_hpo.search.hp import OptunaHyperParameters
from tests.unit.search.test_keras_tuner_compat import _one_distribution_per_name, _run


@pytest.fixture
def no_download_efficientnet(monkeypatch: pytest.MonkeyPatch) -> None:
    """HyperEfficientNet with ``weights=None``: nothing to download in tests."""
    for version, constructor in list(kt_efficientnet.EFFICIENTNET_MODELS.items()):
        monkeypatch.setitem(
            kt_efficientnet.EFFICIENTNET_MODELS, version, functools.partial(constructor, weights=None)
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda: kt.applications.HyperResNet(input_shape=(32, 32, 3), classes=2),
        lambda: kt.applications.HyperXception(input_shape=(32, 32, 3), classes=2),
        lambda: kt.applications.HyperEfficientNet(input_shape=(32, 32, 3), classes=2),
    ],
    ids=["HyperResNet", "HyperXception", "HyperEfficientNet"],
)
def test_bundled_application_builders(
    make: Callable[[], kt.HyperModel], no_download_efficientnet: None
) -> None:
    hypermodel = make()
    plain = kt.HyperParameters()
    hypermodel.build(plain)  # KerasTuner's first trial: the declared defaults
    study = _run(hypermodel.build, 2, seed=11, defaults_first=True)
    assert study.trials[0].params == {k: v for k, v in plain.values.items() if k in study.trials[0].params}
    first = OptunaHyperParameters.from_params(study.trials[0].params)
    keras.utils.clear_session()
    hypermodel.build(first)
    assert first.values == plain.values
    _one_distribution_per_name(study)
