"""Load experiment configs from YAML, apply command-line overrides, save the result.

Paths written in a config file are relative to that file's folder (as docker compose reads
its files), so ``clot-hpo search /anywhere/experiments/x.yaml`` means the same from any
working directory. What a study *writes* (``search.storage``, ``tracking.uri``,
``tracking.artifact_root``) stays relative to the working directory, like MLflow's own
``./mlruns``, so that ``promote`` and ``predict`` find it with their defaults. Command-line
overrides are relative to the working directory, as on any command line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from clot_hpo.config.schema import ExperimentConfig
from clot_hpo.errors import ConfigError
from clot_hpo.search_space import locate_search_space
from clot_hpo.util import redact_secrets
from clot_hpo.yaml_io import config_error, describe_errors, read_yaml

# Values of training.weights that name no file.
_WEIGHTS_KEYWORDS = frozenset({"", "imagenet", "none", "None"})


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = value


def _relative_to(base: Path, value: str) -> str:
    path = Path(os.path.expanduser(value))
    return str(path) if path.is_absolute() else os.path.normpath(base / path)


def resolve_paths(data: dict[str, Any], base: Path, source: str) -> None:
    """Make the paths a config file reads absolute, in place, against its folder ``base``.

    ``data.path`` and a ``training.weights`` file are joined to ``base``; each of
    ``search.search_spaces`` is a file relative to ``base`` or the name of a bundled search
    space (:func:`~clot_hpo.search_space.locate_search_space`). Values of the wrong type are
    left for the schema to report.

    Raises:
        ConfigError: a search space is neither; the message names the places tried.
    """
    sections = {k: v for k, v in data.items() if isinstance(v, dict)}
    data_section, training, search = (sections.get(k, {}) for k in ("data", "training", "search"))
    if isinstance(data_section.get("path"), str):
        data_section["path"] = _relative_to(base, data_section["path"])
    weights = training.get("weights")
    if isinstance(weights, str) and weights not in _WEIGHTS_KEYWORDS:
        training["weights"] = _relative_to(base, weights)
    spaces = search.get("search_spaces")
    if not isinstance(spaces, dict):
        return
    for name, given in spaces.items():
        if isinstance(given, str):
            try:
                spaces[name] = str(locate_search_space(given, base))
            except ConfigError as exc:
                raise ConfigError(f"{source}: search.search_spaces.{name}: {exc}") from None


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load and validate an experiment config.

    Args:
        path: the YAML file, or None for the embedded defaults.
        overrides: dotted keys (``"search.n_trials"``) to values; ``None`` values are ignored,
            so unset command-line flags leave the YAML alone. They are applied after the
            file's paths are resolved, so a relative path given here stays relative to the
            working directory.

    Raises:
        ConfigError: the file is missing, not YAML, repeats a key, names a search space that
            does not exist, or breaks the schema; the message names the file and key path.
    """
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    if path is not None:
        resolve_paths(data, Path(path).resolve().parent, source)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, key, value)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(source, describe_errors(exc, model=ExperimentConfig)) from exc


def save_resolved(config: ExperimentConfig, path: str | Path) -> Path:
    """Write the resolved config (defaults and overrides applied, paths absolute) as YAML.

    Passwords in URLs (``search.storage``, ``tracking.uri``) are written as ``***``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = redact_secrets(config.model_dump(mode="json"))
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


__all__ = ["load_config", "read_yaml", "resolve_paths", "save_resolved"]
