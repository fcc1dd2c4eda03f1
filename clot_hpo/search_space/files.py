"""Where search spaces are: the bundled ones (package data), ``./search_spaces``, or a path.

The bundled files live in ``clot_hpo/search_space/bundled/`` so that an installed wheel has
them; the checkout's top-level ``search_spaces/`` is a link to that folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from clot_hpo.errors import ConfigError
from clot_hpo.search_space.spec import NAME_PATTERN

BUNDLED_DIR = Path(__file__).resolve().with_name("bundled")
SEARCH_SPACES_DIR = "search_spaces"


def bundled_search_spaces() -> list[str]:
    """Names of the search spaces shipped with the package, sorted."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


def search_space_dirs() -> list[Path]:
    """Where search spaces are looked up by backbone: the bundled ones, then ``./search_spaces``."""
    cwd = (Path.cwd() / SEARCH_SPACES_DIR).resolve()
    return [BUNDLED_DIR] if cwd == BUNDLED_DIR else [BUNDLED_DIR, cwd]


def default_search_space_path(backbone: str) -> Path:
    """The search space of a backbone: ``<backbone>.yaml``, bundled or in ``./search_spaces``.

    Raises:
        ConfigError: no such file in any search-space directory (the message lists the names
            there are).
    """
    if not isinstance(backbone, str) or not NAME_PATTERN.match(backbone):
        raise ConfigError(f"backbone must be a name such as efficientnet_b1, but got {backbone!r}")
    for directory in search_space_dirs():
        candidate = directory / f"{backbone}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no search space for backbone {backbone!r}: expected {backbone}.yaml among the bundled "
        f"search spaces or in ./{SEARCH_SPACES_DIR}/ (available: {', '.join(list_search_spaces()) or 'none'})"
    )


def list_search_spaces() -> list[str]:
    """Names (file stems) of the search spaces found in ``search_space_dirs()``, sorted."""
    names: set[str] = set()
    for directory in search_space_dirs():
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.yaml"))
    return sorted(names)


def locate_search_space(given: str | Path, base: Path | None = None) -> Path:
    """The file a config means by ``given``: a path relative to ``base``, else a bundled name.

    ``given`` is first read as a path (relative ones against ``base``, the config file's
    folder, or the working directory without one); a bare name such as ``resnet50`` or
    ``resnet50.yaml`` that is no file there names a bundled search space.

    Raises:
        ConfigError: neither exists; the message lists the places tried.
    """
    text = os.path.expanduser(str(given))
    path = Path(text)
    if not path.is_absolute():
        path = (base if base is not None else Path.cwd()) / path
    tried = [Path(os.path.normpath(path))]
    if tried[0].is_file():
        return tried[0]
    stem = text.removesuffix(".yaml").removesuffix(".yml")
    bare = "/" not in text and os.sep not in text and NAME_PATTERN.match(stem) is not None
    if bare:
        tried.append(BUNDLED_DIR / f"{stem}.yaml")
        if tried[1].is_file():
            return tried[1]
    hint = "" if bare else "; a bare name such as resnet50 names a bundled search space"
    raise ConfigError(
        f"search space {str(given)!r} not found: tried {', '.join(map(str, tried))} "
        f"(bundled: {', '.join(bundled_search_spaces()) or 'none'}){hint}"
    )
