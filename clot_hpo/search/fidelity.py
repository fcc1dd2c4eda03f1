"""Fidelities: what a pruner's rungs spend (epochs, image resolution or both) and each epoch's size.

``search.fidelity`` (docs/pruning.md):

* ``epochs``: every epoch at the trial's ``image_size``; the ``hyperband`` pruner judges after
  epochs 2 and 5 (:func:`~clot_hpo.search.pruners.hyperband_rung_epochs`), as always.
* ``resolution``: the first epochs run at the reduced sides of ``search.fidelity_sizes``
  (fractions of the side), :data:`RESOLUTION_RUNG_EPOCHS` epochs per size, and the pruner
  judges after each size; the configurations that survive go on at full size with the
  weights they have (global pooling: one model for every side), not from scratch.
* ``both``: the resolution rungs, then epoch rungs at full size (after 2 and 5 more epochs).

Reports stay one per epoch on step ``epoch - 1``; the trial records the side of each epoch
(``epoch_sides``) and :class:`~clot_hpo.search.pruners.RungPruner` compares a trial only with
trials that reached the same step at the same fraction of their side, so a value at 120 px
never competes with one at 240 px. A trial's last epoch is always at full size, so its final
value is a full-size one; a pruned trial's last report may be at a reduced size, and
``epoch_sides`` says so.

Progressive resizing (``training.progressive_resize``, :func:`clot_hpo.train.progressive_sides`)
is a trial's own size schedule; :func:`trial_sides` combines it with the fidelity's (the smaller
side wins each epoch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clot_hpo.search.pruners import hyperband_rung_epochs

FIDELITIES = ("epochs", "resolution", "both")

RESOLUTION_RUNG_EPOCHS = 2
"""Epochs at each reduced size before it is judged: as with epochs, never after epoch 1 alone
(random initialization and BatchNorm statistics still settling rank trials poorly)."""

# The hyperparameters that search progressive resizing (search spaces may declare them).
RESIZE_START_PARAM = "resize_start_fraction"
RESIZE_FULL_EPOCH_PARAM = "resize_full_size_epoch"


def _low_sizes(fidelity: str, epochs: int, sizes: Sequence[float]) -> list[float]:
    """The reduced sizes that fit: each takes its rung's epochs and one full-size epoch must remain."""
    if fidelity not in FIDELITIES:
        raise ValueError(f"fidelity must be one of {list(FIDELITIES)}, but got {fidelity!r}")
    if fidelity == "epochs":
        return []
    fitting = (epochs - 1) // RESOLUTION_RUNG_EPOCHS
    return [float(f) for f in sizes][:fitting]


def fidelity_fractions(fidelity: str, epochs: int, sizes: Sequence[float]) -> list[float]:
    """Each epoch's side as a fraction of the trial's ``image_size`` under ``fidelity``."""
    low = _low_sizes(fidelity, epochs, sizes)
    fractions = [f for f in low for _ in range(RESOLUTION_RUNG_EPOCHS)]
    return fractions + [1.0] * (epochs - len(fractions))


def fidelity_rung_epochs(fidelity: str, epochs: int, sizes: Sequence[float]) -> list[int]:
    """After how many epochs (1-based) the ``hyperband`` pruner judges a trial under ``fidelity``."""
    low = _low_sizes(fidelity, epochs, sizes)
    if fidelity == "epochs":
        return hyperband_rung_epochs(epochs)
    rungs = [RESOLUTION_RUNG_EPOCHS * (r + 1) for r in range(len(low))]
    if fidelity == "both":
        done = len(low) * RESOLUTION_RUNG_EPOCHS
        rungs += [done + e for e in hyperband_rung_epochs(epochs - done)]
    return rungs


def study_rung_epochs(config: Any) -> list[int] | None:
    """The ``hyperband`` pruner's rungs when sizes may change between epochs; None otherwise.

    With ``search.fidelity: epochs`` and no progressive resizing, every epoch is at full size
    and the pruner is Optuna's successive halving as before (None). Otherwise a
    :class:`~clot_hpo.search.pruners.RungPruner` judges at these epochs, comparing trials at
    equal sizes only.
    """
    fidelity, epochs = config.search.fidelity, config.training.epochs
    if fidelity == "epochs" and not config.training.progressive_resize.enabled:
        return None
    return fidelity_rung_epochs(fidelity, epochs, config.search.fidelity_sizes)


def trial_sides(
    *,
    image_size: int,
    epochs: int,
    fidelity: str,
    fidelity_sizes: Sequence[float],
    progressive: Any,
    values: Mapping[str, Any],
    min_side: int,
) -> list[int] | None:
    """The image side of each epoch of one trial; None when every epoch is at ``image_size``.

    Args:
        image_size: the trial's side (its full size).
        epochs: the epochs it runs.
        fidelity: ``search.fidelity``.
        fidelity_sizes: ``search.fidelity_sizes``.
        progressive: ``training.progressive_resize`` (its ``enabled``, ``start_fraction``,
            ``full_size_epoch`` and ``multiple``).
        values: the trial's sampled values: with progressive resizing enabled, a search space
            that declares :data:`RESIZE_START_PARAM` or :data:`RESIZE_FULL_EPOCH_PARAM` searches
            it (an undeclared one keeps the config's value).
        min_side: the backbone's smallest input side.
    """
    # Here, not at the top: the study process reads rungs without loading Keras (train.py does).
    from clot_hpo.train import progressive_sides

    multiple = int(progressive.multiple)
    if progressive.enabled:
        sides = progressive_sides(
            image_size,
            epochs,
            start_fraction=float(values.get(RESIZE_START_PARAM, progressive.start_fraction)),
            full_size_epoch=int(values.get(RESIZE_FULL_EPOCH_PARAM, progressive.full_size_epoch)),
            multiple=multiple,
            min_side=min_side,
        )
    else:
        sides = [image_size] * epochs
    for epoch, fraction in enumerate(fidelity_fractions(fidelity, epochs, fidelity_sizes)):
        if fraction < 1.0:
            side = max(min_side, int(image_size * fraction) // multiple * multiple)
            sides[epoch] = min(sides[epoch], side, image_size)
    return None if all(side == image_size for side in sides) else sides
