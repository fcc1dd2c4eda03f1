"""The optimizer catalogue: each optimizer's factory and the state it keeps per parameter.

The hypermodel builds optimizers from here, the VRAM estimator reads ``slots`` from here, and
the CLI and search-space docs list :data:`OPTIMIZERS`. Keras is imported only by factories,
so the estimator can read the catalogue without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clot_hpo.errors import ConfigError

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class OptimizerSettings:
    """The hyperparameters an optimizer factory reads."""

    learning_rate: float
    weight_decay: float = 0.0
    momentum: float = 0.9
    accumulation_steps: int = 1


@dataclass(frozen=True)
class OptimizerSpec:
    """One catalogue entry.

    Attributes:
        name: the value of the ``optimizer`` hyperparameter.
        slots: optimizer-state tensors kept per trainable parameter (Adam: m and v).
        make: the factory.
    """

    name: str
    slots: int
    make: Callable[[OptimizerSettings], keras.optimizers.Optimizer]


def _accumulate(s: OptimizerSettings) -> int | None:
    # Keras' gradient accumulation keeps the effective batch when the VRAM plan shrinks it.
    return s.accumulation_steps if s.accumulation_steps > 1 else None


def _adam(s: OptimizerSettings) -> keras.optimizers.Optimizer:
    import keras

    return keras.optimizers.Adam(
        s.learning_rate, weight_decay=s.weight_decay or None, gradient_accumulation_steps=_accumulate(s)
    )


def _adamw(s: OptimizerSettings) -> keras.optimizers.Optimizer:
    import keras

    # AdamW without decay is Adam: keep Keras' own default decay when none is searched.
    return keras.optimizers.AdamW(
        s.learning_rate, weight_decay=s.weight_decay or 0.004, gradient_accumulation_steps=_accumulate(s)
    )


def _sgd(s: OptimizerSettings) -> keras.optimizers.Optimizer:
    import keras

    return keras.optimizers.SGD(
        s.learning_rate,
        momentum=s.momentum,
        nesterov=True,
        weight_decay=s.weight_decay or None,
        gradient_accumulation_steps=_accumulate(s),
    )


OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec("adam", slots=2, make=_adam),
        OptimizerSpec("adamw", slots=2, make=_adamw),
        # clot-hpo's SGD always uses (Nesterov) momentum: one slot.
        OptimizerSpec("sgd", slots=1, make=_sgd),
    )
}


def list_optimizers() -> list[str]:
    """Names accepted by :func:`get_optimizer_spec`, sorted."""
    return sorted(OPTIMIZERS)


def get_optimizer_spec(name: str) -> OptimizerSpec:
    """The catalogue entry of ``name``.

    Raises:
        ConfigError: ``name`` is not in the catalogue.
    """
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ConfigError(f"optimizer must be one of {list_optimizers()}, but got {name!r}") from None
