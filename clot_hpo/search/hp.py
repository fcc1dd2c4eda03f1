"""KerasTuner's ``HyperParameters`` API backed by an Optuna trial.

``OptunaHyperParameters(trial)`` lets any ``build_model(hp)`` function or
``keras_tuner.HyperModel`` written for KerasTuner run unchanged while Optuna decides the
values: every active hyperparameter is sampled through the trial with the matching Optuna
distribution, so samplers, pruners and storage see an ordinary define-by-run trial.

Mapping (KerasTuner call -> Optuna distribution recorded on the trial):

=====================================  ====================================================
``Float(lo, hi)``                      ``FloatDistribution(lo, hi)``
``Float(lo, hi, step=s)``              ``FloatDistribution(lo, hi, step=s)``
``Float(lo, hi, sampling="log")``      ``FloatDistribution(lo, hi, log=True)``
``Int(lo, hi, step=s)``                ``IntDistribution(lo, hi, step=s)`` (``s`` defaults 1)
``Int(lo, hi, sampling="log")``        ``IntDistribution(lo, hi, log=True)``
log or reverse_log *with* ``step``     ``CategoricalDistribution`` of KerasTuner's grid
                                       (``lo * step**k``); Optuna forbids ``step`` with
                                       ``log``, and the grid is exactly KerasTuner's set
``sampling="reverse_log"`` (no step)   linear distribution over the same range (Optuna has
                                       no reverse-log prior); noted in the trial's user
                                       attribute ``hp_sampling:<name>``
``Choice(values)``                     ``CategoricalDistribution(values)``
``Boolean()``                          ``CategoricalDistribution([False, True])``
``Fixed(value)``                       not sampled: in ``hp.values`` only
=====================================  ====================================================

So ``hp.values`` equals ``trial.params`` for every active hyperparameter except ``Fixed``
ones, and the value stored on the trial is always the value the model received.
``default=`` is accepted and kept in ``hp.space`` but does not steer sampling (enqueue a
trial with ``study.enqueue_trial`` to try defaults first).

``conditional_scope``, ``get``, ``is_active`` and ``__getitem__`` keep KerasTuner's
semantics because only the registration hook (``_register``) is overridden: an inactive
hyperparameter is not sampled, returns ``None`` and is absent from ``hp.values``;
``hp.get`` on it raises ``ValueError`` (KerasTuner's behaviour). A name registered twice
returns its first value and is never re-suggested.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping
from typing import Any

import keras_tuner
import optuna
from keras_tuner.engine import hyperparameters as kt_hp
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from clot_hpo.errors import ConfigError

__all__ = ["MAX_GRID_VALUES", "OptunaHyperParameters", "optuna_distribution"]

# A log/reverse_log hyperparameter with a step becomes a categorical over its grid; a grid
# this large is almost surely a mistake (e.g. step=1.001) and would make a useless categorical.
MAX_GRID_VALUES = 1000


def optuna_distribution(hp: kt_hp.HyperParameter) -> BaseDistribution | None:
    """The Optuna distribution a KerasTuner hyperparameter is sampled from.

    Args:
        hp: a ``Float``, ``Int``, ``Choice``, ``Boolean`` or ``Fixed`` hyperparameter.

    Returns:
        The distribution, or ``None`` for ``Fixed`` (it is never sampled).

    Raises:
        ConfigError: a log/reverse_log grid with more than ``MAX_GRID_VALUES`` values.
        TypeError: an unknown hyperparameter class.
    """
    if isinstance(hp, kt_hp.Fixed):
        return None
    if isinstance(hp, kt_hp.Boolean):
        return CategoricalDistribution([False, True])
    if isinstance(hp, kt_hp.Choice):
        return CategoricalDistribution(list(hp.values))
    if isinstance(hp, (kt_hp.Int, kt_hp.Float)):
        is_int = isinstance(hp, kt_hp.Int)
        if hp.sampling in ("log", "reverse_log") and hp.step is not None:
            return CategoricalDistribution(_kerastuner_grid(hp, is_int))
        log = hp.sampling == "log"
        if is_int:
            step = 1 if log or hp.step is None else int(hp.step)
            high = hp.min_value + (hp.max_value - hp.min_value) // step * step
            return IntDistribution(hp.min_value, high, log=log, step=step)
        if hp.step is None:
            return FloatDistribution(hp.min_value, hp.max_value, log=log)
        high = _float_grid_high(hp.min_value, hp.max_value, hp.step)
        return FloatDistribution(hp.min_value, high, step=hp.step)
    raise TypeError(f"unknown hyperparameter type {type(hp).__name__} for {hp.name!r}")


def _float_grid_high(low: float, high: float, step: float) -> float:
    """The largest ``low + k * step <= high``, as Optuna computes it (decimal arithmetic).

    Done here so that Optuna does not warn about the range on every trial; KerasTuner
    silently uses the same grid.
    """
    d_low, d_high, d_step = (decimal.Decimal(str(v)) for v in (low, high, step))
    if (d_high - d_low) % d_step == 0:
        return float(high)
    return float((d_high - d_low) // d_step * d_step + d_low)


def _kerastuner_grid(hp: kt_hp.Int | kt_hp.Float, is_int: bool) -> list[int | float]:
    """KerasTuner's finite value set for log/reverse_log sampling with a (multiplicative) step."""
    lo, hi, step = hp.min_value, hp.max_value, hp.step
    n_values = int(math.log(hi / lo, step) + 1e-8) + 1  # as KerasTuner's Numerical._get_n_values
    if n_values > MAX_GRID_VALUES:
        raise ConfigError(
            f"hyperparameter {hp.name!r}: {hp.sampling} sampling with step={step} gives "
            f"{n_values} values between {lo} and {hi}; at most {MAX_GRID_VALUES} are allowed "
            "(Optuna forbids step with log, so such a grid becomes a categorical): use a larger "
            "step or drop it"
        )
    values: list[int | float] = []
    for k in range(n_values):
        offset = lo * math.pow(step, k)
        value = offset if hp.sampling == "log" else hi + lo - offset
        # Round away float noise (0.0010000000000000002) so the stored choices read cleanly.
        cast = int(value) if is_int else float(f"{value:.12g}")
        if cast not in values:
            values.append(cast)
    return sorted(values)


def _suggest(trial: optuna.trial.BaseTrial, name: str, dist: BaseDistribution) -> Any:
    """Sample ``name`` through the trial's public ``suggest_*`` API (works for every trial kind)."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, CategoricalDistribution)
    return trial.suggest_categorical(name, list(dist.choices))


class OptunaHyperParameters(keras_tuner.HyperParameters):
    """``keras_tuner.HyperParameters`` whose values come from an Optuna trial.

    Args:
        trial: a live ``optuna.trial.Trial`` (values are sampled and stored on it), or a
            ``FixedTrial`` / ``FrozenTrial`` (values are read from its params). ``None``
            behaves as ``from_params({})``: any active sampled hyperparameter is an error.

    Example:
        >>> def objective(trial):
        ...     hp = OptunaHyperParameters(trial)
        ...     model = build_model(hp)  # written for KerasTuner
        ...     ...
    """

    def __init__(self, trial: optuna.trial.BaseTrial | None = None) -> None:
        super().__init__()
        self._trial = trial
        # Only set by from_params: the names a rebuild may use, for a clear error on a miss.
        self._params: dict[str, Any] | None = None if trial is not None else {}

    @property
    def trial(self) -> optuna.trial.BaseTrial | None:
        """The trial values are sampled from (a ``FixedTrial`` after ``from_params``)."""
        return self._trial

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> OptunaHyperParameters:
        """Hyperparameters that return exactly ``params``, to rebuild a finished trial's model.

        Args:
            params: a finished trial's ``params`` (``FrozenTrial.params``, ``study.best_params``).
                Names the builder does not use are ignored.

        Raises:
            ConfigError: when the builder asks for an active hyperparameter missing from
                ``params`` (inactive ones, by their condition, need no value), or a
                categorical value that is not one of the builder's choices.
        """
        params = dict(params)
        hp = cls(optuna.trial.FixedTrial(params))
        hp._params = params
        return hp

    def copy(self) -> OptunaHyperParameters:
        """A copy that keeps sampling from the same trial (KerasTuner's copy drops it)."""
        new: OptunaHyperParameters = type(self).from_config(self.get_config())
        new._trial, new._params = self._trial, self._params
        return new

    def _register(self, hyperparameter: kt_hp.HyperParameter, overwrite: bool = False) -> Any:
        """Sample an active, not yet valued hyperparameter, then register it as KerasTuner does.

        KerasTuner's own ``_register`` puts ``hp.default`` into ``values`` when the name has
        no value yet; filling ``values`` from the trial first makes it return that instead.
        ``overwrite`` is ignored: a trial cannot change a value it already handed out.
        """
        hp = hyperparameter
        if hp.name not in self.values and self.is_active(hp):
            self._validate_name(hp.name)  # before sampling, so a bad name is never stored
            value = self._sample(hp)
            self.values[hp.name] = value
        return super()._register(hp, overwrite=False)

    def _sample(self, hp: kt_hp.HyperParameter) -> Any:
        if isinstance(hp, kt_hp.Fixed):
            return hp.value
        dist = optuna_distribution(hp)
        assert dist is not None
        known = self._known_params()
        if known is not None and hp.name not in known:
            raise ConfigError(
                f"hyperparameter {hp.name!r} is active but has no value in the given params "
                f"(got {sorted(known)}); rebuilding needs a value for every active hyperparameter"
            )
        assert self._trial is not None  # without a trial, _known_params() is {}: raised above
        if isinstance(self._trial, optuna.trial.Trial):
            value = _suggest(self._trial, hp.name, dist)
        else:
            try:
                value = _suggest(self._trial, hp.name, dist)
            except ValueError as exc:  # FixedTrial/FrozenTrial: value not among the choices
                raise ConfigError(f"hyperparameter {hp.name!r}: {exc}") from exc
        if (
            isinstance(hp, (kt_hp.Int, kt_hp.Float))
            and hp.sampling == "reverse_log"
            and hp.step is None
        ):
            self._trial.set_user_attr(
                f"hp_sampling:{hp.name}",
                "reverse_log requested; sampled from a linear distribution over the same range "
                "(Optuna has no reverse-log distribution)",
            )
        return value

    def _known_params(self) -> Mapping[str, Any] | None:
        """Names a rebuild can supply, or ``None`` for a live trial (it samples anything)."""
        if self._params is not None:
            return self._params
        if isinstance(self._trial, optuna.trial.FrozenTrial):
            return self._trial.params
        return None
