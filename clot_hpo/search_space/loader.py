"""Load and validate YAML search spaces (the bundled ones, or any file).

One pydantic model per parameter type checks each parameter; the rules between parameters
(a condition's parent comes earlier and can take the listed values) are checked after. Every
problem becomes a :class:`~clot_hpo.errors.ConfigError` naming the file and the key path, as
for experiment configs, e.g. ``search_spaces/x.yaml: parameters.learning_rate: log sampling
needs low > 0, but got low=0.0``; all problems of a file are reported at once, separated by
``; ``. The format is described in ``docs/search_spaces.md``.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from clot_hpo.errors import ConfigError
from clot_hpo.search_space.spec import (
    BACKBONE,
    NAME_PATTERN,
    PARAM_TYPES,
    SIZE_BOUNDS,
    Condition,
    ParamSpec,
    ParamType,
    SearchSpace,
)
from clot_hpo.yaml_io import config_error, describe_errors, read_yaml


# ----- value checks shared by the models ----------------------------------------------------
def _number(value: Any, *, integer: bool) -> int | float | None:
    """A finite number; numeric text such as ``1e-5`` (a string to YAML 1.1) is accepted."""
    if value is None:
        return None  # absent optional key; a required one is caught by its type
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"must be {kind}, but got {value!r}")
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise ValueError(f"must be {kind}, but got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be finite, but got {value!r}")
    if integer:
        if number != int(number):
            raise ValueError(f"must be an integer for type int, but got {value!r}")
        return int(number)
    return float(number)


def _flag(value: Any) -> bool | None:
    # Strict: pydantic would read the text "yes please" or the number 2 as a boolean guess.
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"must be true or false, but got {value!r}")
    return value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and not (
        isinstance(value, float) and not math.isfinite(value)
    )


def _kind(value: Any) -> str:
    """Type family for "all the same type" checks (bool is not an int here)."""
    return "bool" if isinstance(value, bool) else type(value).__name__


def _in_values(value: Any, values: tuple[Any, ...]) -> bool:
    """Membership that does not treat True as 1 (Python does)."""
    return any(_kind(value) == _kind(v) and value == v for v in values)


def _scalar(value: Any) -> Any:
    if not _is_scalar(value):
        raise ValueError(f"must be a number, text or true/false, but got {value!r}")
    return value


def _choices(choices: Any) -> tuple[Any, ...]:
    if not isinstance(choices, (list, tuple)):
        raise ValueError(f"must be a list of values, but got {choices!r}")
    choices = list(choices)
    if not choices:
        raise ValueError("must list at least one value, but got []")
    for choice in choices:
        if not _is_scalar(choice):
            raise ValueError(
                f"values must be numbers, text or true/false (not null, lists or maps), but got {choice!r}"
            )
    kinds = sorted({_kind(c) for c in choices})
    if len(kinds) > 1:
        # KerasTuner's Choice rejects mixed types; [1, 2.5] reads as int and float in YAML.
        raise ValueError(f"values must all have one type, but got {', '.join(kinds)} in {choices}")
    if len(set(choices)) != len(choices):
        raise ValueError(f"values must not repeat, but got {choices}")
    return tuple(choices)


def _condition(raw: Any) -> Condition | None:
    """The shape of ``when``.

    Whether the parent exists and can take the values is checked once every parameter is
    known (:func:`_check_condition`).
    """
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ValueError(f"must map one parent to its values ({{parent: [values]}}), but got {raw!r}")
    ((parent, values),) = raw.items()
    return Condition(str(parent), tuple(values) if isinstance(values, list) else (values,))


_Float = Annotated[float, BeforeValidator(partial(_number, integer=False))]
_Int = Annotated[int, BeforeValidator(partial(_number, integer=True))]
_OptFloat = Annotated[float | None, BeforeValidator(partial(_number, integer=False))]
_OptInt = Annotated[int | None, BeforeValidator(partial(_number, integer=True))]
_Flag = Annotated[bool, BeforeValidator(_flag)]
_OptFlag = Annotated[bool | None, BeforeValidator(_flag)]
_Scalar = Annotated[Any, BeforeValidator(_scalar)]
_Choices = Annotated[tuple[Any, ...], BeforeValidator(_choices)]
_When = Annotated[Condition | None, BeforeValidator(_condition)]


# ----- one model per parameter type ---------------------------------------------------------
class _Param(BaseModel):
    """Keys every type shares: ``type`` and ``when`` (declared by each type, in file order)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    if TYPE_CHECKING:  # for the type checker only: fields here would come first in messages
        type: ParamType
        when: Condition | None

    def spec(self, name: str, when: Condition | None) -> ParamSpec:
        """The typed spec of this parameter, with its checked condition."""
        fields = {k: getattr(self, k) for k in type(self).model_fields if k not in ("type", "when")}
        return ParamSpec(name, self.type, **fields, when=when)


class _Range(_Param):
    """Rules of ``float`` and ``int`` ranges."""

    @field_validator("step", check_fields=False)
    @classmethod
    def _positive_step(cls, step: float | None) -> float | None:
        if step is not None and step <= 0:
            raise ValueError(f"must be > 0, but got step={step}")
        return step

    @field_validator("default", check_fields=False)
    @classmethod
    def _default_in_range(cls, default: float | None, info: ValidationInfo) -> float | None:
        low, high = info.data.get("low"), info.data.get("high")
        if default is None or low is None or high is None or low > high:
            return default  # nothing to check against; a bad range is reported on its own
        if not low <= default <= high:
            raise ValueError(f"must lie in [low, high] = [{low}, {high}], but got {default}")
        return default

    @model_validator(mode="after")
    def _range_rules(self) -> _Range:
        low, high, step, log = (getattr(self, k) for k in ("low", "high", "step", "log"))
        if low > high:
            raise ValueError(f"`low <= high` must hold, but got low={low}, high={high}")
        if log and low <= 0:
            raise ValueError(f"log sampling needs low > 0, but got low={low}")
        if log and step is not None:
            raise ValueError(
                f"log sampling cannot be combined with step (Optuna forbids it), but got step={step}"
            )
        return self


class FloatParam(_Range):
    """A float range: ``{type: float, low, high, step?, log?, default?, when?}``."""

    type: Literal["float"]
    low: _Float
    high: _Float
    step: _OptFloat = None
    log: _Flag = False
    default: _OptFloat = None
    when: _When = None


class IntParam(_Range):
    """An integer range: ``{type: int, low, high, step?, log?, default?, when?}`` (whole-number bounds)."""

    type: Literal["int"]
    low: _Int
    high: _Int
    step: _OptInt = None
    log: _Flag = False
    default: _OptInt = None
    when: _When = None


class CategoricalParam(_Param):
    """A choice among values: ``{type: categorical, choices, default?, when?}``."""

    type: Literal["categorical"]
    choices: _Choices
    default: Any = None
    when: _When = None

    @field_validator("default")
    @classmethod
    def _default_is_a_choice(cls, default: Any, info: ValidationInfo) -> Any:
        choices = info.data.get("choices")
        if default is not None and choices is not None and not _in_values(default, choices):
            raise ValueError(f"must be one of the choices {list(choices)}, but got {default!r}")
        return default


class BoolParam(_Param):
    """A flag: ``{type: bool, default?, when?}``."""

    type: Literal["bool"]
    default: _OptFlag = None
    when: _When = None


class FixedParam(_Param):
    """A constant, not searched (so no default): ``{type: fixed, value, when?}``."""

    type: Literal["fixed"]
    value: _Scalar
    when: _When = None


PARAM_MODELS: dict[str, type[_Param]] = {
    "float": FloatParam,
    "int": IntParam,
    "categorical": CategoricalParam,
    "bool": BoolParam,
    "fixed": FixedParam,
}
assert tuple(PARAM_MODELS) == PARAM_TYPES


def _backbone_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ValueError(f"must be a name such as efficientnet_b1, but got {value!r}")
    return value


def _parameter_table(value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of name to spec, but got {type(value).__name__}")
    if not value:
        raise ValueError("must define at least one parameter, but got none")
    return value


class SearchSpaceFile(BaseModel):
    """The top level of a search-space file; each parameter is then checked by its type's model."""

    model_config = ConfigDict(extra="forbid")

    backbone: Annotated[str, BeforeValidator(_backbone_name)]
    description: str | None = None
    parameters: Annotated[dict[Any, Any], BeforeValidator(_parameter_table)]


# ----- loading ------------------------------------------------------------------------------
def load_search_space(path: str | Path) -> SearchSpace:
    """Load and validate a YAML search space.

    Raises:
        ConfigError: the file is missing, is not YAML, or breaks a rule; the message names
            the file and the key path and states the rule.
    """
    path = Path(path)
    return parse_search_space(read_yaml(path, what="search space file", empty_ok=False), source=path)


def parse_search_space(data: Any, source: str | Path | None = None) -> SearchSpace:
    """Validate an already-parsed search space (the YAML's top-level mapping).

    Args:
        data: the mapping, e.g. ``SearchSpace.to_dict()`` or a section of another file.
        source: named in error messages and kept as ``SearchSpace.source``.
    """
    where = str(source) if source is not None else "<search space>"
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(f"{where}: the top level must be a mapping, but got {got}")
    problems: list[str] = []
    top: SearchSpaceFile | None = None
    try:
        top = SearchSpaceFile.model_validate(data)
    except ValidationError as exc:
        problems += describe_errors(exc, model=SearchSpaceFile)
    # Parameters are checked even when the top level is wrong: all problems in one go.
    raw_params = data.get("parameters")
    params = _parse_parameters(raw_params, problems) if isinstance(raw_params, dict) else {}
    if problems or top is None:
        raise config_error(where, problems)
    return SearchSpace(
        backbone=top.backbone,
        parameters=params,
        source=Path(source) if source is not None else None,
        description=top.description,
    )


def _parse_parameters(raw_params: dict[Any, Any], problems: list[str]) -> dict[str, ParamSpec]:
    """Valid specs in file order; each problem is appended to ``problems``."""
    params: dict[str, ParamSpec] = {}
    declared: list[str] = []  # valid or not, so one bad parent does not cascade
    all_names = {str(n) for n in raw_params}
    for name, raw in raw_params.items():
        path = f"parameters.{name}"
        found: list[str] = []
        model = _model_for(path, name, raw, found)
        if model is not None:
            try:
                parsed = model.model_validate(raw)
            except ValidationError as exc:
                found += describe_errors(
                    exc, prefix=("parameters", name), model=model, context=f" for type {raw['type']}"
                )
            else:
                when = parsed.when
                if when is not None:
                    found += _check_condition(f"{path}.when", name, when, declared, params, all_names)
                if not found:
                    spec = parsed.spec(name, when)
                    found += _check_size_bounds(path, spec)
                if not found:
                    params[name] = spec
        problems += found
        declared.append(str(name))
    return params


def _model_for(path: str, name: Any, raw: Any, found: list[str]) -> type[_Param] | None:
    """The model of this parameter's ``type``, or None with the reason in ``found``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        found.append(f"{path}: names must be identifiers (letters, digits, _; not starting with a digit)")
    elif name == BACKBONE:
        found.append(f"{path}: 'backbone' is reserved: the backbone is chosen by the experiment config")
    elif not isinstance(raw, dict):
        found.append(f"{path}: must be a mapping with a `type`, but got {raw!r}")
    elif "type" not in raw:
        found.append(f"{path}: missing required key `type` (one of {', '.join(PARAM_TYPES)})")
    elif not isinstance(raw["type"], str) or raw["type"] not in PARAM_MODELS:
        found.append(f"{path}.type: unknown type {raw['type']!r} (allowed: {', '.join(PARAM_TYPES)})")
    else:
        return PARAM_MODELS[raw["type"]]
    return None


def _check_size_bounds(path: str, spec: ParamSpec) -> list[str]:
    """Problems of an ``image_size`` or ``batch_size`` whose values leave :data:`SIZE_BOUNDS`."""
    if spec.name not in SIZE_BOUNDS:
        return []
    low, high = SIZE_BOUNDS[spec.name]
    if spec.type == "int":
        values: tuple[Any, ...] = (spec.low, spec.high)
    elif spec.type == "categorical":
        values = spec.choices or ()
    elif spec.type == "fixed":
        values = (spec.value,)
    else:
        kinds = "type int, categorical or fixed"
        return [f"{path}: must be an integer {spec.name} ({kinds}), but got type {spec.type}"]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{path}: must be an integer, but got {value!r}"]
        if not low <= value <= high:
            return [f"{path}: `{low} <= {spec.name} <= {high}` must hold, but got {value}"]
    return []


def _check_condition(
    path: str,
    name: str,
    cond: Condition,
    declared: list[str],
    params: dict[str, ParamSpec],
    all_names: set[str],
) -> list[str]:
    """Problems of ``when: {parent: [values]}`` given the parameters defined before it."""
    parent, values = cond.parent, cond.values
    vpath = f"{path}.{parent}"
    if not values:
        return [f"{vpath}: must list at least one value, but got []"]
    if parent == name:
        return [f"{path}: a parameter cannot be conditioned on itself"]
    if parent == BACKBONE:
        bad = [v for v in values if not isinstance(v, str)]
        return [f"{vpath}: values must be backbone names, but got {bad[0]!r}"] if bad else []
    if parent not in declared:
        later = "defined later" if parent in all_names else "not defined"
        return [
            f"{path}: parent {parent!r} must be `backbone` or a parameter defined earlier in the "
            f"file, but it is {later}"
        ]
    spec = params.get(parent)
    if spec is None:  # the parent itself is invalid and already reported
        return []
    for value in values:
        if not _is_scalar(value):
            return [f"{vpath}: values must be numbers, text or true/false, but got {value!r}"]
    possible = _possible_values(spec)
    if possible is not None:
        for value in values:
            if not _in_values(value, possible):
                return [f"{vpath}: {value!r} is not a value {parent!r} can take ({list(possible)})"]
    elif any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        return [f"{vpath}: values must be numbers for a {spec.type} parent, but got {list(values)}"]
    return []


def _possible_values(spec: ParamSpec) -> tuple[Any, ...] | None:
    """The finite set of values a parent can take, or None for a numeric range."""
    if spec.type == "categorical":
        return spec.choices
    if spec.type == "bool":
        return (False, True)
    if spec.type == "fixed":
        return (spec.value,)
    return None
