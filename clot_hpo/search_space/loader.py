"""Load and validate YAML search spaces (``search_spaces/*.yaml``).

Every problem becomes a :class:`~clot_hpo.errors.ConfigError` naming the file and the key
path, e.g. ``search_spaces/x.yaml: parameters.learning_rate: log sampling needs low > 0,
but got low=0.0``. All problems of a file are reported at once, separated by ``; ``.
The format is described in ``docs/search_spaces.md``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from clot_hpo.errors import ConfigError
from clot_hpo.search_space.spec import BACKBONE, PARAM_TYPES, Condition, ParamSpec, SearchSpace

TOP_KEYS = ("backbone", "description", "parameters")
# Keys each parameter type accepts, beyond `type`; `default` and `when` go with every type
# except that a fixed value has no default.
_TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "float": ("low", "high", "step", "log", "default", "when"),
    "int": ("low", "high", "step", "log", "default", "when"),
    "categorical": ("choices", "default", "when"),
    "bool": ("default", "when"),
    "fixed": ("value", "when"),
}
_REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "float": ("low", "high"),
    "int": ("low", "high"),
    "categorical": ("choices",),
    "bool": (),
    "fixed": ("value",),
}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SEARCH_SPACES_DIR = "search_spaces"


class _Invalid(Exception):
    """One problem with one parameter; collected and reported together."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: search space file not found")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from exc


def load_search_space(path: str | Path) -> SearchSpace:
    """Load and validate a YAML search space.

    Raises:
        ConfigError: the file is missing, is not YAML, or breaks a rule; the message names
            the file and the key path and states the rule.
    """
    path = Path(path)
    return parse_search_space(_read_yaml(path), source=path)


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
    errors: list[str] = []
    for key in data:
        if key not in TOP_KEYS:
            errors.append(f"{key}: unknown key (allowed: {', '.join(TOP_KEYS)})")

    backbone = data.get("backbone")
    if "backbone" not in data:
        errors.append("backbone: missing required key")
    elif not isinstance(backbone, str) or not _NAME_RE.match(backbone):
        errors.append(f"backbone: must be a name such as efficientnet_b1, but got {backbone!r}")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        errors.append(f"description: must be text, but got {type(description).__name__}")

    params: dict[str, ParamSpec] = {}
    raw_params = data.get("parameters")
    if "parameters" not in data:
        errors.append("parameters: missing required key")
    elif not isinstance(raw_params, dict):
        errors.append(
            f"parameters: must be a mapping of name to spec, but got {type(raw_params).__name__}"
        )
    elif not raw_params:
        errors.append("parameters: must define at least one parameter, but got none")
    else:
        declared: list[str] = []  # valid or not, so one bad parent does not cascade
        for name, raw in raw_params.items():
            try:
                spec = _parse_param(name, raw, declared, params, set(map(str, raw_params)))
                params[spec.name] = spec
            except _Invalid as exc:
                errors.append(str(exc))
            declared.append(str(name))

    if errors:
        raise ConfigError("; ".join(f"{where}: {e}" for e in errors))
    assert isinstance(backbone, str)
    return SearchSpace(
        backbone=backbone,
        parameters=params,
        source=Path(source) if source is not None else None,
        description=description,
    )


def _parse_param(
    name: Any, raw: Any, declared: list[str], params: dict[str, ParamSpec], all_names: set[str]
) -> ParamSpec:
    path = f"parameters.{name}"
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _Invalid(
            path, "names must be identifiers (letters, digits, _; not starting with a digit)"
        )
    if name == BACKBONE:
        raise _Invalid(
            path, "'backbone' is reserved: the backbone is chosen by the experiment config"
        )
    if not isinstance(raw, dict):
        raise _Invalid(path, f"must be a mapping with a `type`, but got {raw!r}")
    if "type" not in raw:
        raise _Invalid(path, f"missing required key `type` (one of {', '.join(PARAM_TYPES)})")
    ptype = raw["type"]
    if ptype not in PARAM_TYPES:
        raise _Invalid(
            f"{path}.type", f"unknown type {ptype!r} (allowed: {', '.join(PARAM_TYPES)})"
        )
    allowed = _TYPE_KEYS[ptype]
    for key in raw:
        if key != "type" and key not in allowed:
            raise _Invalid(
                f"{path}.{key}",
                f"unknown key for type {ptype} (allowed: type, {', '.join(allowed)})",
            )
    for key in _REQUIRED_KEYS[ptype]:
        if key not in raw:
            raise _Invalid(path, f"missing required key `{key}` for type {ptype}")

    when = (
        _parse_when(path, raw["when"], name, declared, params, all_names) if "when" in raw else None
    )
    if ptype in ("float", "int"):
        spec = _parse_numeric(path, name, ptype, raw, when)
    elif ptype == "categorical":
        choices = _parse_choices(f"{path}.choices", raw["choices"])
        default = raw.get("default")
        if default is not None and not _in_values(default, choices):
            raise _Invalid(
                f"{path}.default",
                f"must be one of the choices {list(choices)}, but got {default!r}",
            )
        spec = ParamSpec(name, "categorical", choices=choices, default=default, when=when)
    elif ptype == "bool":
        default = raw.get("default")
        if default is not None and not isinstance(default, bool):
            raise _Invalid(f"{path}.default", f"must be true or false, but got {default!r}")
        spec = ParamSpec(name, "bool", default=default, when=when)
    else:
        value = raw["value"]
        if not _is_scalar(value):
            raise _Invalid(
                f"{path}.value", f"must be a number, text or true/false, but got {value!r}"
            )
        spec = ParamSpec(name, "fixed", value=value, when=when)
    return spec


def _number(path: str, key: str, value: Any, *, integer: bool) -> int | float:
    """A finite number; numeric text such as ``1e-5`` (a string to YAML 1.1) is accepted."""
    kind = "an integer" if integer else "a number"
    number: int | float
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Invalid(f"{path}.{key}", f"must be {kind}, but got {value!r}")
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise _Invalid(f"{path}.{key}", f"must be {kind}, but got {value!r}") from None
    if not math.isfinite(number):
        raise _Invalid(f"{path}.{key}", f"must be finite, but got {value!r}")
    if integer:
        if number != int(number):
            raise _Invalid(f"{path}.{key}", f"must be an integer for type int, but got {value!r}")
        return int(number)
    return float(number)


def _parse_numeric(
    path: str, name: str, ptype: str, raw: dict[str, Any], when: Condition | None
) -> ParamSpec:
    integer = ptype == "int"
    low = _number(path, "low", raw["low"], integer=integer)
    high = _number(path, "high", raw["high"], integer=integer)
    step = (
        _number(path, "step", raw["step"], integer=integer) if raw.get("step") is not None else None
    )
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise _Invalid(f"{path}.log", f"must be true or false, but got {log!r}")
    if low > high:
        raise _Invalid(path, f"`low <= high` must hold, but got low={low}, high={high}")
    if step is not None and step <= 0:
        raise _Invalid(f"{path}.step", f"must be > 0, but got step={step}")
    if log and low <= 0:
        raise _Invalid(path, f"log sampling needs low > 0, but got low={low}")
    if log and step is not None:
        raise _Invalid(
            path,
            f"log sampling cannot be combined with step (Optuna forbids it), but got step={step}",
        )
    default = raw.get("default")
    if default is not None:
        default = _number(path, "default", default, integer=integer)
        if not low <= default <= high:
            raise _Invalid(
                f"{path}.default", f"must lie in [low, high] = [{low}, {high}], but got {default}"
            )
    return ParamSpec(
        name, ptype, low=low, high=high, step=step, log=log, default=default, when=when
    )  # type: ignore[arg-type]


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


def _parse_choices(path: str, choices: Any) -> tuple[Any, ...]:
    if not isinstance(choices, list):
        raise _Invalid(path, f"must be a list of values, but got {choices!r}")
    if not choices:
        raise _Invalid(path, "must list at least one value, but got []")
    for choice in choices:
        if not _is_scalar(choice):
            raise _Invalid(
                path,
                "values must be numbers, text or true/false (not null, lists or maps), "
                f"but got {choice!r}",
            )
    kinds = sorted({_kind(c) for c in choices})
    if len(kinds) > 1:
        # KerasTuner's Choice rejects mixed types; [1, 2.5] reads as int and float in YAML.
        raise _Invalid(
            path, f"values must all have one type, but got {', '.join(kinds)} in {choices}"
        )
    if len(set(choices)) != len(choices):
        raise _Invalid(path, f"values must not repeat, but got {choices}")
    return tuple(choices)


def _parse_when(
    path: str,
    raw: Any,
    name: str,
    declared: list[str],
    params: dict[str, ParamSpec],
    all_names: set[str],
) -> Condition:
    wpath = f"{path}.when"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise _Invalid(
            wpath, f"must map one parent to its values ({{parent: [values]}}), but got {raw!r}"
        )
    ((parent, values),) = raw.items()
    values = values if isinstance(values, list) else [values]
    if not values:
        raise _Invalid(f"{wpath}.{parent}", "must list at least one value, but got []")
    if parent == name:
        raise _Invalid(wpath, "a parameter cannot be conditioned on itself")
    if parent == BACKBONE:
        for value in values:
            if not isinstance(value, str):
                raise _Invalid(
                    f"{wpath}.{parent}", f"values must be backbone names, but got {value!r}"
                )
        return Condition(parent, tuple(values))
    if parent not in declared:
        raise _Invalid(
            wpath,
            f"parent {parent!r} must be `backbone` or a parameter defined earlier in the file, "
            "but it is " + ("defined later" if parent in all_names else "not defined"),
        )
    spec = params.get(parent)
    if spec is None:  # the parent itself is invalid and already reported
        return Condition(parent, tuple(values))
    for value in values:
        if not _is_scalar(value):
            raise _Invalid(
                f"{wpath}.{parent}",
                f"values must be numbers, text or true/false, but got {value!r}",
            )
    possible = _possible_values(spec)
    if possible is not None:
        for value in values:
            if not _in_values(value, possible):
                raise _Invalid(
                    f"{wpath}.{parent}",
                    f"{value!r} is not a value {parent!r} can take ({list(possible)})",
                )
    elif any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise _Invalid(
            f"{wpath}.{parent}",
            f"values must be numbers for a {spec.type} parent, but got {values}",
        )
    return Condition(parent, tuple(values))


def _possible_values(spec: ParamSpec) -> tuple[Any, ...] | None:
    """The finite set of values a parent can take, or None for a numeric range."""
    if spec.type == "categorical":
        return spec.choices
    if spec.type == "bool":
        return (False, True)
    if spec.type == "fixed":
        return (spec.value,)
    return None


def search_space_dirs() -> list[Path]:
    """Where search spaces are looked up: the repository's ``search_spaces/``, then the CWD's."""
    repo = Path(__file__).resolve().parents[2] / SEARCH_SPACES_DIR
    cwd = (Path.cwd() / SEARCH_SPACES_DIR).resolve()
    return [repo] if repo == cwd else [repo, cwd]


def default_search_space_path(backbone: str) -> Path:
    """The bundled search space of a backbone: ``search_spaces/<backbone>.yaml``.

    Raises:
        ConfigError: no such file in any search-space directory (the message lists those
            that exist).
    """
    if not isinstance(backbone, str) or not _NAME_RE.match(backbone):
        raise ConfigError(f"backbone must be a name such as efficientnet_b1, but got {backbone!r}")
    for directory in search_space_dirs():
        candidate = directory / f"{backbone}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no search space for backbone {backbone!r}: expected {SEARCH_SPACES_DIR}/{backbone}.yaml "
        f"(available: {', '.join(list_search_spaces()) or 'none'})"
    )


def list_search_spaces() -> list[str]:
    """Names (file stems) of the search spaces found in ``search_space_dirs()``, sorted."""
    names: set[str] = set()
    for directory in search_space_dirs():
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.yaml"))
    return sorted(names)
