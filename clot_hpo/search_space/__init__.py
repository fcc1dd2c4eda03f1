"""YAML search spaces as typed specs (no Keras, TensorFlow or Optuna here).

Format and rules: ``docs/search_spaces.md``.
"""

from __future__ import annotations

from clot_hpo.search_space.files import (
    BUNDLED_DIR,
    bundled_search_spaces,
    default_search_space_path,
    list_search_spaces,
    locate_search_space,
    search_space_dirs,
)
from clot_hpo.search_space.loader import PARAM_MODELS, load_search_space, parse_search_space
from clot_hpo.search_space.spec import PARAM_TYPES, Condition, ParamSpec, SearchSpace

__all__ = [
    "BUNDLED_DIR",
    "PARAM_MODELS",
    "PARAM_TYPES",
    "Condition",
    "ParamSpec",
    "SearchSpace",
    "bundled_search_spaces",
    "default_search_space_path",
    "list_search_spaces",
    "load_search_space",
    "locate_search_space",
    "parse_search_space",
    "search_space_dirs",
]
