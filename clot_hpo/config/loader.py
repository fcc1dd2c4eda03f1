"""Load experiment configs from YAML, apply command-line overrides, save the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from clot_hpo.config.schema import ExperimentConfig
from clot_hpo.errors import ConfigError


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, but got {type(data).__name__}")
    return data


def _format_validation_error(source: str, exc: ValidationError) -> str:
    """One line per problem: ``file: key.path: message (got value)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<top>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        got = f" (got {err['input']!r})" if err["type"] not in ("extra_forbidden", "missing") else ""
        lines.append(f"{source}: {loc}: {msg}{got}")
    return "; ".join(lines)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = value


def load_config(
    path: str | Path | None, overrides: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Load and validate an experiment config.

    Args:
        path: the YAML file, or None for the embedded defaults.
        overrides: dotted keys (``"search.n_trials"``) to values; ``None`` values are ignored,
            so unset command-line flags leave the YAML alone.

    Raises:
        ConfigError: the file is missing, not YAML, or breaks the schema; the message names
            the file and the key path.
    """
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, key, value)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from exc


def save_resolved(config: ExperimentConfig, path: str | Path) -> Path:
    """Write the resolved config (defaults and overrides applied) as YAML."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return path
