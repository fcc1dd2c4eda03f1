"""GPU habits: dtype policy choice, and recognising out-of-memory failures."""

from __future__ import annotations

from collections.abc import Iterator

import keras
import pytest
import tensorflow as tf

from clot_hpo.budget import configure_gpu, is_oom_error, is_oom_exit
from clot_hpo.errors import ConfigError, TrialFailed


@pytest.fixture()
def restore_policy() -> Iterator[None]:
    before = keras.mixed_precision.global_policy().name
    yield
    keras.mixed_precision.set_global_policy(before)


def test_auto_without_gpu_stays_float32(restore_policy: None) -> None:
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    info = configure_gpu("auto")
    assert info.mixed_precision is False and info.gpus == []
    assert keras.mixed_precision.global_policy().name == "float32"
    assert "no GPU" in info.reason


def test_on_and_off_set_the_keras_policy(restore_policy: None) -> None:
    assert configure_gpu("on").mixed_precision is True
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    info = configure_gpu("off")
    assert info.mixed_precision is False and info.policy == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="maybe"):
        configure_gpu("maybe")


def test_oom_errors_are_recognised() -> None:
    assert is_oom_error(tf.errors.ResourceExhaustedError(None, None, "failed to allocate"))
    assert is_oom_error(RuntimeError("CUDA_ERROR_OUT_OF_MEMORY: out of memory"))
    assert is_oom_error(MemoryError())
    assert not is_oom_error(ValueError("no room for that shape"))
    assert not is_oom_error(TrialFailed("val_auc is nan at epoch 2"))
    try:
        try:
            raise tf.errors.ResourceExhaustedError(None, None, "while allocating")
        except tf.errors.ResourceExhaustedError as inner:
            raise TrialFailed("training failed") from inner
    except TrialFailed as outer:
        assert is_oom_error(outer)


def test_oom_exits_are_recognised() -> None:
    assert is_oom_exit(-9)
    assert is_oom_exit(137)
    assert is_oom_exit(1, "ResourceExhaustedError: OOM when allocating tensor with shape[16,480,480,32]")
    assert not is_oom_exit(1, "ValueError: bad input")
    assert not is_oom_exit(0)
