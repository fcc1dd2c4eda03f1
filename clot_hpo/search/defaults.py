"""Defaults first: a new study's first trials build each search space's declared defaults.

KerasTuner's tuners build a builder's defaults in their first trial, so the values its author
chose are always tried. :func:`enqueue_default_trials` does the same for a clot-hpo study: one
enqueued trial per backbone searched, holding that search space's defaults under the names
``ClotHyperModel.settings`` records (``<backbone>.<name>`` plus ``backbone`` when several
backbones are searched, plain names for one). Enqueued trials are ordinary trials: sampled
and counted like any other, tracked in MLflow, inside the study's budgets.

This module imports neither Keras nor TensorFlow (the study process does not load them): the
defaults come from the search-space specs through a small recorder with KerasTuner's default
rules (``default``, else ``low`` for numbers, the first choice, ``False``).
:func:`clot_hpo.search.hp.enqueue_defaults` does the same for any KerasTuner builder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna

from clot_hpo.search_space import SearchSpace, load_search_space

__all__ = ["DEFAULTS_ENQUEUED_ATTR", "default_trials", "enqueue_default_trials"]

# Study user attribute: how many defaults trials were enqueued, set once, when they were.
DEFAULTS_ENQUEUED_ATTR = "defaults_enqueued"


class _DefaultsRecorder:
    """The part of KerasTuner's ``HyperParameters`` that ``SearchSpace.sample`` calls, returning defaults.

    ``params`` collects what a trial records (every active, non-fixed value); ``forced``
    replaces a default (the backbone of this defaults trial).
    """

    def __init__(self, forced: Mapping[str, Any] | None = None) -> None:
        self.forced = dict(forced or {})
        self.values: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self._conditions: list[tuple[str, list[Any]]] = []

    @contextlib.contextmanager
    def conditional_scope(self, parent_name: str, parent_values: Any) -> Iterator[None]:
        values = list(parent_values) if isinstance(parent_values, (list, tuple)) else [parent_values]
        self._conditions.append((parent_name, values))
        try:
            yield
        finally:
            self._conditions.pop()

    def _active(self) -> bool:
        return all(self.values.get(parent) in values for parent, values in self._conditions)

    def _declare(self, name: str, default: Any, *, sampled: bool = True) -> Any:
        if not self._active():
            return None
        if name not in self.values:  # KerasTuner: a name declared again keeps its first value
            self.values[name] = self.forced.get(name, default)
            if sampled:
                self.params[name] = self.values[name]
        return self.values[name]

    def Float(self, name: str, min_value: float, max_value: float, *, default: Any = None, **_: Any) -> Any:  # noqa: N802
        return self._declare(name, min_value if default is None else default)

    def Int(self, name: str, min_value: int, max_value: int, *, default: Any = None, **_: Any) -> Any:  # noqa: N802
        return self._declare(name, min_value if default is None else default)

    def Choice(self, name: str, values: list[Any], *, default: Any = None, **_: Any) -> Any:  # noqa: N802
        return self._declare(name, values[0] if default is None else default)

    def Boolean(self, name: str, *, default: bool = False, **_: Any) -> Any:  # noqa: N802
        return self._declare(name, bool(default))

    def Fixed(self, name: str, value: Any, **_: Any) -> Any:  # noqa: N802
        return self._declare(name, value, sampled=False)


def default_trials(spaces: Mapping[str, SearchSpace | str | Path]) -> list[dict[str, Any]]:
    """The params of one defaults trial per backbone, named as ``ClotHyperModel.settings`` records them.

    Args:
        spaces: search space (or its file) per backbone, in the study's backbone order.

    Returns:
        One params dict per backbone (one in all for a single backbone).
    """
    loaded = {
        name: space if isinstance(space, SearchSpace) else load_search_space(space)
        for name, space in spaces.items()
    }
    names = list(loaded)
    if len(names) == 1:
        recorder = _DefaultsRecorder()
        loaded[names[0]].sample(recorder)
        return [recorder.params]
    trials = []
    for backbone in names:
        # As ClotHyperModel.settings: the backbone is a choice, its parameters conditional on
        # it and prefixed with it, so backbones never share a name (no scoped names arise).
        recorder = _DefaultsRecorder(forced={"backbone": backbone})
        chosen = recorder.Choice("backbone", names)
        with recorder.conditional_scope("backbone", [chosen]):
            loaded[chosen].sample(recorder, prefix=f"{chosen}.")
        trials.append(recorder.params)
    return trials


def enqueue_default_trials(
    study: optuna.Study,
    spaces: Mapping[str, SearchSpace | str | Path],
    *,
    lock: contextlib.AbstractContextManager[Any] | None = None,
) -> list[dict[str, Any]]:
    """Enqueue the defaults trials of a study that has no trials yet, once.

    Once per study: a study marked with :data:`DEFAULTS_ENQUEUED_ATTR` (by ``clot-hpo
    prepare-study`` or the first worker) or holding any trial gets nothing. Workers starting
    together on an empty study would each see it empty and enqueue the defaults twice, so the
    check and the enqueueing run under ``lock`` (:func:`clot_hpo.search.storage.study_lock`).

    Args:
        study: the study, just created or loaded.
        spaces: search space (or its file) per backbone.
        lock: held while checking and enqueueing (none: the caller is alone).

    Returns:
        The params enqueued (empty when the study already had them, or any trial).
    """
    if DEFAULTS_ENQUEUED_ATTR in study.user_attrs:  # prepared: no lock needed
        return []
    with lock or contextlib.nullcontext():
        if DEFAULTS_ENQUEUED_ATTR in study.user_attrs or study.get_trials(deepcopy=False):
            return []
        trials = default_trials(spaces)
        for params in trials:
            study.enqueue_trial(params, skip_if_exists=True)
        study.set_user_attr(DEFAULTS_ENQUEUED_ATTR, len(trials))
    return trials
