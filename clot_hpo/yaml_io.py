"""Read YAML input files strictly and report their problems as one-line :class:`ConfigError`.

Experiment configs and search spaces share this reader and this error format, so both say
``file: key.path: problem`` the same way. Like :mod:`clot_hpo.errors`, this module imports
nothing else of the package (it is also below :mod:`clot_hpo.search_space`, which the config
imports).
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from clot_hpo.errors import ConfigError

Loc = tuple[str | int, ...]


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, node: yaml.MappingNode, first: yaml.Node, again: yaml.Node) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.node, self.first, self.again = key, node, first, again


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error.

    PyYAML keeps the last of two equal keys without a word, so a pasted block silently
    overrides the settings above it; the schema's promise that a typo is an error needs this.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` overrides keys on purpose
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not key_node:
                raise _DuplicateKey(key, node, first, key_node)
        return super().construct_mapping(node, deep=deep)


def _key_path(
    root: yaml.Node, target: yaml.Node, prefix: Loc = (), seen: set[int] | None = None
) -> Loc | None:
    """The keys (and list indexes) from ``root`` down to the mapping ``target``."""
    if root is target:
        return prefix
    seen = seen if seen is not None else set()
    if id(root) in seen:  # an alias back up the tree (`&a [*a]`)
        return None
    seen.add(id(root))
    children: list[tuple[str | int, yaml.Node]] = []
    if isinstance(root, yaml.MappingNode):
        children = [(getattr(k, "value", "?"), v) for k, v in root.value]
    elif isinstance(root, yaml.SequenceNode):
        children = list(enumerate(root.value))
    for key, child in children:
        found = _key_path(child, target, (*prefix, key), seen)
        if found is not None:
            return found
    return None


def read_yaml(path: str | Path, *, what: str = "file", empty_ok: bool = True) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping.

    Args:
        path: the file.
        what: what the file is, for the not-found message (``"search space file"``).
        empty_ok: an empty file reads as ``{}``; otherwise it is an error.

    Raises:
        ConfigError: the file is missing, is not YAML, repeats a key in one mapping (named with
            its key path and both lines), or its top level is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    loader = _UniqueKeyLoader(path.read_text(encoding="utf-8"))
    root: yaml.Node | None = None
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except _DuplicateKey as exc:
        parents = _key_path(root, exc.node) if root is not None else None
        where = ".".join(str(k) for k in (*(parents or ()), exc.key))
        raise ConfigError(
            f"{path}: {where}: duplicate key {exc.key!r} (lines {exc.first.start_mark.line + 1} "
            f"and {exc.again.start_mark.line + 1}); YAML would keep only the last one"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from exc
    finally:
        loader.dispose()
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(f"{path}: the top level must be a mapping, but got {got}")
    return data


# ----- validation errors --------------------------------------------------------------------
def _section_model(model: type[BaseModel] | None, loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model that validates the mapping at ``loc`` under ``model``, if the schema says."""
    for part in loc:
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            return None
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def _unknown_key(key: str, model: type[BaseModel] | None, context: str) -> str:
    message = f"unknown key{context}"
    if model is None:
        return message
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"{message} (did you mean {close[0]!r}?)"
    return f"{message} (allowed: {', '.join(allowed)})"


def describe_errors(
    exc: ValidationError,
    *,
    prefix: Loc = (),
    model: type[BaseModel] | None = None,
    context: str = "",
) -> list[str]:
    """One ``key.path: problem`` line per error of a pydantic validation.

    Args:
        exc: the error of ``model.model_validate``.
        prefix: the key path of the validated mapping inside its file (``("parameters", "lr")``).
        model: the validated model: an unknown key then gets a suggestion or the allowed keys.
        context: appended to "unknown key" and "missing required key" (``" for type float"``).
    """
    lines = []
    for err in exc.errors():
        loc: Loc = (*prefix, *err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = _unknown_key(str(loc[-1]), _section_model(model, err["loc"][:-1]), context)
        elif kind == "missing" and len(loc) > 1:
            # Said of the section that lacks the key: "parameters.lr: missing required key `high`".
            loc, msg = loc[:-1], f"missing required key `{loc[-1]}`{context}"
        elif kind == "missing":
            msg = f"missing required key{context}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if "got" not in msg:  # our own messages already say what they got
                msg += f" (got {err['input']!r})"
        lines.append(f"{'.'.join(str(p) for p in loc) or '<top>'}: {msg}")
    return lines


def config_error(source: str | Path, problems: Iterable[str]) -> ConfigError:
    """All problems of one file in one line: ``file: key.path: problem; file: ...``."""
    return ConfigError("; ".join(f"{source}: {p}" for p in problems))


__all__ = ["Loc", "config_error", "describe_errors", "read_yaml"]
