"""KerasTuner's ``HyperParameters`` API backed by an Optuna trial.

``OptunaHyperParameters(trial)`` lets any ``build_model(hp)`` function or
``keras_tuner.HyperModel`` written for KerasTuner run unchanged while Optuna decides the
values: every active hyperparameter is sampled through the trial with the matching Optuna
distribution, so samplers, pruners and storage see an ordinary define-by-run trial.

Mapping (KerasTuner call -> Optuna distribution recorded on the trial):

=====================================  ====================================================
``Float(lo, hi)``                      ``FloatDistribution(lo, hi)``
``Float(lo, hi, step=s)``              ``FloatDistribution(lo, hi, step=s)``; ``hi`` is
                                       included when ``hi - lo`` is a multiple of ``s``
                                       (KerasTuner's documented set; its float floor can drop it)
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

A name is recorded on the trial as the builder wrote it, except a *scoped redeclaration*:
a name declared under a ``conditional_scope`` with another distribution than the one the
name already has (in this build, or in the study's earlier trials where Optuna would reject
the new one) is recorded as ``name[parent=v1|v2]`` (:func:`scoped_name`), so Optuna sees one
distribution per recorded name. ``hp.values`` always uses the builder's names;
``hp.optuna_names`` maps them to the recorded ones, and ``from_params(trial.params)`` reads
either.

``conditional_scope``, ``get``, ``is_active`` and ``__getitem__`` keep KerasTuner's
semantics because only the registration hook (``_register``) is overridden: an inactive
hyperparameter is not sampled, returns ``None`` and is absent from ``hp.values``;
``hp.get`` on it raises ``ValueError`` (KerasTuner's behaviour). A name registered twice
under the same conditions returns its first value and is never re-suggested.

Defaults first (KerasTuner's tuners build the declared defaults in their first trial):
:func:`enqueue_defaults` enqueues the defaults of a builder on a study that has no trials yet;
``OptunaHyperParameters.for_defaults()`` is the ``hp`` that records them.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import keras
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

__all__ = [
    "MAX_GRID_VALUES",
    "OptunaHyperParameters",
    "enqueue_defaults",
    "optuna_distribution",
    "scoped_name",
]

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


def scoped_name(name: str, conditions: Iterable[Any]) -> str:
    """The name a scoped redeclaration is recorded under: ``name[parent=v1|v2,other=v]``.

    Args:
        name: the hyperparameter's name (with any ``name_scope``).
        conditions: its KerasTuner ``Parent`` conditions, outermost first.

    Example:
        ``hp.Choice("child", [7, 8, 9])`` inside ``hp.conditional_scope("choice", [2])``
        when ``child`` already has another distribution: ``child[choice=2]``.
    """
    parts = [f"{c.name}={'|'.join(str(v) for v in c.values)}" for c in conditions]
    return f"{name}[{','.join(parts)}]"


def _compatible(old: BaseDistribution, new: BaseDistribution) -> bool:
    """Whether Optuna accepts ``new`` under a name that already has ``old`` in the study."""
    try:
        optuna.distributions.check_distribution_compatibility(old, new)
    except ValueError:
        return False
    return True


# Optuna's messages when a name gets a distribution it cannot share (set_trial_param).
_INCOMPATIBLE = ("Cannot set different", "does not support dynamic value space")


@keras.saving.register_keras_serializable(package="clot_hpo", name="OptunaHyperParameters")
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
        # Set by from_params/from_config: the values a rebuild may use (recorded names).
        self._params: dict[str, Any] | None = None if trial is not None else {}
        # hp name -> the name its value is recorded under on the trial (see scoped_name).
        self._optuna_names: dict[str, str] = {}
        # recorded name -> value, for the values this object sampled or read.
        self._recorded: dict[str, Any] = {}
        # for_defaults only: forced values, and the distributions earlier defaults recorded.
        self._defaults: dict[str, Any] | None = None
        self._history: dict[str, BaseDistribution] | None = None
        # The study's distributions per name (first seen), read once when a name is scoped.
        self._study_distributions: dict[str, BaseDistribution] | None = None

    @property
    def trial(self) -> optuna.trial.BaseTrial | None:
        """The trial values are sampled from (a ``FixedTrial`` after ``from_params``)."""
        return self._trial

    @property
    def optuna_names(self) -> dict[str, str]:
        """Each sampled hyperparameter's name on the trial (differs only for scoped names)."""
        return dict(self._optuna_names)

    @property
    def recorded_params(self) -> dict[str, Any]:
        """The values as recorded on the trial (``trial.params`` of this build's names)."""
        return dict(self._recorded)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> OptunaHyperParameters:
        """Hyperparameters that return exactly ``params``, to rebuild a finished trial's model.

        Args:
            params: a finished trial's ``params`` (``FrozenTrial.params``, ``study.best_params``),
                scoped names included. Names the builder does not use are ignored.

        Raises:
            ConfigError: when the builder asks for an active hyperparameter missing from
                ``params`` (inactive ones, by their condition, need no value), or a
                categorical value that is not one of the builder's choices.
        """
        params = dict(params)
        hp = cls(optuna.trial.FixedTrial(params))
        hp._params = params
        return hp

    @classmethod
    def for_defaults(
        cls,
        forced: Mapping[str, Any] | None = None,
        *,
        history: dict[str, BaseDistribution] | None = None,
    ) -> OptunaHyperParameters:
        """Hyperparameters that return every declared default, as KerasTuner's first trial does.

        After ``build(hp)``, ``hp.recorded_params`` is the trial to enqueue
        (``study.enqueue_trial``): the names are the ones a trial will record.

        Args:
            forced: values that replace a default (e.g. ``{"backbone": "resnet50"}`` for that
                backbone's defaults).
            history: distributions recorded by earlier defaults trials of the same study,
                updated in place, so that a later one gets the scoped names its trial will use.
        """
        hp = cls(None)
        hp._params = None
        hp._defaults = dict(forced or {})
        hp._history = history if history is not None else {}
        return hp

    def get_config(self) -> dict[str, Any]:
        """KerasTuner's config (space and values), plus the recorded names."""
        config: dict[str, Any] = super().get_config()
        config["optuna_names"] = dict(self._optuna_names)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OptunaHyperParameters:
        """Space and values from ``get_config`` (or KerasTuner's), with no trial.

        The values are returned as given; an active hyperparameter without a value is a
        ``ConfigError``, as after ``from_params``. ``keras.saving.deserialize_keras_object``
        comes here.
        """
        hps = super().from_config(config)
        assert isinstance(hps, cls)
        hps._optuna_names = dict(config.get("optuna_names", {}))
        hps._params = {hps._optuna_names.get(k, k): v for k, v in hps.values.items()}
        return hps

    @classmethod
    def from_proto(cls, proto: Any) -> OptunaHyperParameters:
        """Space and values from ``to_proto()`` (KerasTuner's protocol buffer), with no trial.

        KerasTuner's own ``from_proto`` fills values from defaults before the proto's values;
        a default left for a hyperparameter that is inactive under the proto's values is
        dropped here, so ``values`` holds exactly the active ones.
        """
        plain = keras_tuner.HyperParameters.from_proto(proto)
        hps = cls.from_config(plain.get_config())
        for name in list(hps.values):
            if not hps.is_active(name):
                del hps.values[name]
        hps._params = dict(hps.values)
        return hps

    def copy(self) -> OptunaHyperParameters:
        """A copy that keeps sampling from the same trial (KerasTuner's copy drops it)."""
        new: OptunaHyperParameters = type(self).from_config(self.get_config())
        new._trial, new._params = self._trial, self._params
        new._recorded = dict(self._recorded)
        new._defaults, new._history = self._defaults, self._history
        new._study_distributions = self._study_distributions
        return new

    def _register(self, hyperparameter: kt_hp.HyperParameter, overwrite: bool = False) -> Any:
        """Sample an active, not yet valued hyperparameter, then register it as KerasTuner does.

        KerasTuner's own ``_register`` puts ``hp.default`` into ``values`` when the name has
        no value yet; filling ``values`` from the trial first makes it return that instead.
        ``overwrite`` (``merge(overwrite=True)``) lets a ``Fixed`` value replace the current
        one, as in KerasTuner, unless the trial already recorded another value for the name;
        any other hyperparameter keeps the trial's value (KerasTuner would reset it to its
        default).
        """
        hp = hyperparameter
        if self.is_active(hp):
            if hp.name not in self.values:
                self._validate_name(hp.name)  # before sampling, so a bad name is never stored
                self.values[hp.name] = self._sample(hp)
            elif overwrite and isinstance(hp, kt_hp.Fixed) and self.values[hp.name] != hp.value:
                self._overwrite(hp)
        return super()._register(hp, overwrite=False)

    def _overwrite(self, hp: kt_hp.Fixed) -> None:
        recorded = self._optuna_names.get(hp.name)
        if recorded is not None:
            raise ConfigError(
                f"merge(overwrite=True) cannot set {hp.name!r} to {hp.value!r}: the trial already "
                f"recorded {recorded!r}={self.values[hp.name]!r}, and a trial keeps one value per "
                f"hyperparameter; merge before the builder declares {hp.name!r}, or pass "
                "overwrite=False"
            )
        self.values[hp.name] = hp.value

    def _sample(self, hp: kt_hp.HyperParameter) -> Any:
        if isinstance(hp, kt_hp.Fixed):
            return hp.value
        dist = optuna_distribution(hp)
        assert dist is not None
        name = self._recorded_name(hp, dist)
        if self._defaults is not None:
            value = self._default_value(hp, dist)
            assert self._history is not None
            self._history.setdefault(name, dist)
        else:
            known = self._known_params()
            if known is not None:
                value = self._read(hp, name, dist, known)
            else:
                # A live Trial, or a FixedTrial replaying values (it checks them as it suggests).
                assert isinstance(self._trial, optuna.trial.BaseTrial)
                name, value = self._suggest_live(self._trial, hp, name, dist)
        self._optuna_names[hp.name] = name
        self._recorded[name] = value
        if (
            self._trial is not None
            and isinstance(hp, (kt_hp.Int, kt_hp.Float))
            and hp.sampling == "reverse_log"
            and hp.step is None
        ):
            self._trial.set_user_attr(
                f"hp_sampling:{hp.name}",
                "reverse_log requested; sampled from a linear distribution over the same range "
                "(Optuna has no reverse-log distribution)",
            )
        return value

    def _default_value(self, hp: kt_hp.HyperParameter, dist: BaseDistribution) -> Any:
        assert self._defaults is not None
        if hp.name not in self._defaults:
            return hp.default
        value = self._defaults[hp.name]
        if isinstance(dist, CategoricalDistribution) and value not in dist.choices:
            raise ConfigError(
                f"hyperparameter {hp.name!r}: the forced default {value!r} is not one of its "
                f"choices {list(dist.choices)}"
            )
        return value

    def _read(
        self, hp: kt_hp.HyperParameter, name: str, dist: BaseDistribution, known: Mapping[str, Any]
    ) -> Any:
        """A rebuild's value: from the given params (a FixedTrial/FrozenTrial checks choices)."""
        if name not in known:
            raise ConfigError(
                f"hyperparameter {name!r} is active but has no value in the given params "
                f"(got {sorted(known)}); rebuilding needs a value for every active hyperparameter"
            )
        trial = self._trial if self._trial is not None else optuna.trial.FixedTrial(dict(known))
        try:
            return _suggest(trial, name, dist)
        except ValueError as exc:  # FixedTrial/FrozenTrial: value not among the choices
            raise ConfigError(f"hyperparameter {name!r}: {exc}") from exc

    def _suggest_live(
        self, trial: optuna.trial.BaseTrial, hp: kt_hp.HyperParameter, name: str, dist: BaseDistribution
    ) -> tuple[str, Any]:
        try:
            return name, _suggest(trial, name, dist)
        except ValueError as exc:
            if not any(text in str(exc) for text in _INCOMPATIBLE):
                raise
            # Another worker recorded a conflicting distribution under the plain name since
            # this trial read the study: a scoped redeclaration goes to its own name.
            if hp.conditions and name == hp.name:
                scoped = scoped_name(hp.name, hp.conditions)
                return scoped, _suggest(trial, scoped, dist)
            raise self._conflict(hp, name, dist, str(exc)) from exc

    def _recorded_name(self, hp: kt_hp.HyperParameter, dist: BaseDistribution) -> str:
        """``hp.name``, or its scoped name when that name already has another distribution.

        Rebuilds take the scoped name when the given params have it. Otherwise a conditional
        declaration is scoped when an earlier declaration of the name in this build (under
        other conditions) has another distribution, or when the study recorded one for the
        name that Optuna would not accept together with this one. An unconditional name
        cannot be scoped: such a conflict is a ``ConfigError``.
        """
        known = self._known_params()
        if not hp.conditions:
            recorded = None if known is not None else self._study_distribution(hp.name)
            if recorded is not None and not _compatible(recorded, dist):
                raise self._conflict(hp, hp.name, dist, f"the study recorded {recorded}")
            return str(hp.name)
        scoped = scoped_name(hp.name, hp.conditions)
        if known is not None:
            return scoped if scoped in known else hp.name
        first = next((p for p in self._hps.get(hp.name, ()) if not isinstance(p, kt_hp.Fixed)), None)
        if first is not None and first.conditions != hp.conditions and optuna_distribution(first) != dist:
            return scoped
        recorded = self._study_distribution(hp.name)
        if recorded is not None and not _compatible(recorded, dist):
            return scoped
        return str(hp.name)

    def _study_distribution(self, name: str) -> BaseDistribution | None:
        """The distribution earlier trials (or earlier defaults) recorded for ``name``."""
        if self._history is not None:
            return self._history.get(name)
        if not isinstance(self._trial, optuna.trial.Trial):
            return None
        if self._study_distributions is None:
            seen: dict[str, BaseDistribution] = {}
            for t in self._trial.study.get_trials(deepcopy=False):
                if t.number != self._trial.number:
                    for key, d in t.distributions.items():
                        seen.setdefault(key, d)
            self._study_distributions = seen
        return self._study_distributions.get(name)

    @staticmethod
    def _conflict(hp: kt_hp.HyperParameter, name: str, dist: BaseDistribution, why: str) -> ConfigError:
        return ConfigError(
            f"hyperparameter {name!r} is declared as {dist}, but {why}; Optuna keeps one "
            "distribution per name in a study: declare it inside a conditional_scope (it is then "
            f"recorded under a scoped name such as '{hp.name}[parent=value]') "
            "or give it another name"
        )

    def _known_params(self) -> Mapping[str, Any] | None:
        """Names a rebuild can supply, or ``None`` for a live trial (it samples anything)."""
        if self._params is not None:
            return self._params
        if isinstance(self._trial, optuna.trial.FrozenTrial):
            return self._trial.params
        return None


def enqueue_defaults(
    study: optuna.Study,
    build: Callable[[OptunaHyperParameters], Any],
    *,
    variants: Sequence[Mapping[str, Any]] = ({},),
) -> list[dict[str, Any]]:
    """Make a new study's first trials build the builder's declared defaults (KerasTuner's rule).

    Runs ``build`` once per variant with ``OptunaHyperParameters.for_defaults(variant)`` and
    enqueues what it recorded (``skip_if_exists``), so these become ordinary trials. Nothing
    is enqueued when the study already has trials (a resume, or another worker came first).

    Args:
        study: the study.
        build: ``build(hp)``: a builder, ``HyperModel.build``, or anything that declares the
            hyperparameters (``ClotHyperModel.settings`` needs no model).
        variants: values forced per defaults trial, e.g. ``[{"backbone": b} for b in names]``
            for one defaults trial per backbone; the default is one trial of plain defaults.

    Returns:
        The params enqueued, in order (empty when the study had trials).
    """
    if study.get_trials(deepcopy=False):
        return []
    history: dict[str, BaseDistribution] = {}
    enqueued: list[dict[str, Any]] = []
    for forced in variants:
        hp = OptunaHyperParameters.for_defaults(forced, history=history)
        build(hp)
        params = hp.recorded_params
        study.enqueue_trial(params, skip_if_exists=True)
        enqueued.append(params)
    return enqueued
