"""Per-trial budget policy: run as sampled, reshape the batch, or prune before training.

A configuration that does not fit is first reshaped: the largest batch that fits, with
Keras' ``gradient_accumulation_steps`` keeping the effective batch size. When not even
``min_batch_size`` fits, the trial is pruned before any training, with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, TypedDict, Unpack

from clot_hpo.budget.device import VramBudget
from clot_hpo.budget.estimator import BackboneProfile, VramEstimate, estimate_vram, format_bytes
from clot_hpo.errors import ConfigError

Action = Literal["run", "reshape", "prune"]


@dataclass(frozen=True)
class BudgetDecision:
    """What the budget lets one trial do, and why.

    Attributes:
        action: ``"run"`` as sampled, ``"reshape"`` (smaller batch with accumulation) or
            ``"prune"`` (nothing fits).
        batch_size: the batch to train with (the requested one when pruned).
        accumulation_steps: gradient accumulation steps (1: none).
        requested_batch_size: the sampled batch size.
        estimate_bytes: the estimate at ``batch_size`` (``None`` after an OOM halving, which is
            not re-estimated).
        requested_estimate_bytes: the estimate at the requested batch size.
        min_estimate_bytes: the estimate at the smallest batch considered (what
            :func:`constraint_value` compares when pruned).
        budget_bytes: usable VRAM (``None``: no limit).
        budget_source: ``"config"``, ``"nvml"`` or ``"none"``.
        min_batch_size: the smallest batch the policy may shrink to.
        oom_retries: how many times :func:`halve_for_oom` halved this decision.
        reason: one readable sentence.
    """

    action: Action
    batch_size: int
    accumulation_steps: int
    requested_batch_size: int
    estimate_bytes: int | None
    budget_bytes: int | None
    reason: str
    requested_estimate_bytes: int | None = None
    min_estimate_bytes: int | None = None
    budget_source: str = "none"
    min_batch_size: int = 2
    oom_retries: int = 0

    @property
    def effective_batch_size(self) -> int:
        """Images per optimizer update."""
        return self.batch_size * self.accumulation_steps

    def to_attrs(self) -> dict[str, Any]:
        """Flat JSON-able values for Optuna user attributes and MLflow params."""
        return {
            "action": self.action,
            "batch_size": self.batch_size,
            "accumulation_steps": self.accumulation_steps,
            "requested_batch_size": self.requested_batch_size,
            "effective_batch_size": self.effective_batch_size,
            "estimate_bytes": self.estimate_bytes,
            "requested_estimate_bytes": self.requested_estimate_bytes,
            "min_estimate_bytes": self.min_estimate_bytes,
            "budget_bytes": self.budget_bytes,
            "budget_source": self.budget_source,
            "min_batch_size": self.min_batch_size,
            "oom_retries": self.oom_retries,
            "reason": self.reason,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], prefix: str = "") -> BudgetDecision:
        """Rebuild a decision from :meth:`to_attrs` output (keys optionally prefixed).

        Lets the study process, which only sees the trial's recorded attributes, compute
        :func:`halve_for_oom` without estimating again.
        """
        names = [f.name for f in fields(cls)]
        values = {name: attrs[prefix + name] for name in names if prefix + name in attrs}
        required = {
            "action",
            "batch_size",
            "accumulation_steps",
            "requested_batch_size",
            "estimate_bytes",
            "budget_bytes",
            "reason",
        }
        missing = required - set(values)
        if missing:
            raise ConfigError(f"a budget decision needs {sorted(missing)}, but the attributes lack them")
        return cls(**values)


class _Shape(TypedDict):
    """What an estimate depends on besides the batch: :func:`estimate_vram`'s keywords."""

    backbone: str
    image_size: int
    mixed_precision: bool
    trainable: str
    optimizer: str
    profile: BackboneProfile | None


class _Requested(TypedDict):
    """The :class:`BudgetDecision` fields every decision of :func:`plan_trial` shares."""

    requested_batch_size: int
    budget_bytes: int | None
    budget_source: str
    requested_estimate_bytes: int
    min_batch_size: int


def _estimate(batch_size: int, accumulation_steps: int, **config: Unpack[_Shape]) -> VramEstimate:
    return estimate_vram(batch_size=batch_size, accumulation_steps=accumulation_steps, **config)


def largest_fitting_batch(
    *,
    backbone: str,
    image_size: int,
    budget_bytes: int,
    mixed_precision: bool,
    trainable: str = "all",
    optimizer: str = "adam",
    low: int = 1,
    high: int = 4096,
    accumulation: bool = False,
    profile: BackboneProfile | None = None,
) -> int | None:
    """The largest batch in ``[low, high]`` whose estimate fits ``budget_bytes``, else ``None``.

    The estimate grows with the batch, so a binary search over cached profiles is exact.

    Args:
        accumulation: count the gradient accumulators a reshaped trial adds.
        profile: the built backbone's profile (see :func:`estimate_vram`).
    """
    config = _Shape(
        backbone=backbone,
        image_size=image_size,
        mixed_precision=mixed_precision,
        trainable=trainable,
        optimizer=optimizer,
        profile=profile,
    )
    steps = 2 if accumulation else 1

    def fits(batch: int) -> bool:
        return _estimate(batch, steps, **config).total_bytes <= budget_bytes

    if high < low or not fits(low):
        return None
    if fits(high):
        return high
    lo, hi = low, high  # fits(lo) and not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def plan_trial(
    *,
    backbone: str,
    image_size: int,
    batch_size: int,
    budget: VramBudget,
    mixed_precision: bool,
    trainable: str = "all",
    optimizer: str = "adam",
    min_batch_size: int = 2,
    profile: BackboneProfile | None = None,
) -> BudgetDecision:
    """Decide how one trial runs under ``budget`` before any training.

    Fits: run as sampled. Else the largest batch that fits (at least ``min_batch_size``)
    with ``accumulation_steps = ceil(requested / batch)``; the batch is then evened out to
    ``ceil(requested / steps)``, which is a divisor of the requested batch whenever one
    needs no more steps. Nothing fits: prune, naming estimate and budget. No limit: run.
    ``profile`` is the built backbone's (a trial passes its own model's, see
    :func:`~clot_hpo.budget.estimator.profile_model`); by default the backbone is built to plan.

    Raises:
        ConfigError: a malformed configuration (unknown backbone, non-positive size, ...).
    """
    if isinstance(min_batch_size, bool) or not isinstance(min_batch_size, int) or min_batch_size < 1:
        raise ConfigError(f"`min_batch_size` must be a positive integer, but got {min_batch_size!r}")
    config = _Shape(
        backbone=backbone,
        image_size=image_size,
        mixed_precision=bool(mixed_precision),
        trainable=trainable,
        optimizer=optimizer,
        profile=profile,
    )
    requested = _estimate(batch_size, 1, **config)
    usable = budget.usable_bytes
    common = _Requested(
        requested_batch_size=batch_size,
        budget_bytes=usable,
        budget_source=budget.source,
        requested_estimate_bytes=requested.total_bytes,
        min_batch_size=min_batch_size,
    )
    if usable is None or requested.total_bytes <= usable:
        return BudgetDecision(
            action="run",
            batch_size=batch_size,
            accumulation_steps=1,
            estimate_bytes=requested.total_bytes,
            min_estimate_bytes=requested.total_bytes,
            reason=(
                f"no VRAM limit; estimate {format_bytes(requested.total_bytes)} at batch {batch_size}"
                if usable is None
                else f"batch {batch_size} fits: estimate {format_bytes(requested.total_bytes)} "
                f"<= budget {format_bytes(usable)}"
            ),
            **common,
        )

    floor = min(min_batch_size, batch_size)
    smallest = _estimate(floor, 1 if floor == batch_size else 2, **config)
    largest = None
    if floor < batch_size:
        largest = largest_fitting_batch(
            **config, budget_bytes=usable, low=floor, high=batch_size - 1, accumulation=True
        )
    if largest is None:
        return BudgetDecision(
            action="prune",
            batch_size=batch_size,
            accumulation_steps=1,
            estimate_bytes=requested.total_bytes,
            min_estimate_bytes=smallest.total_bytes,
            reason=(
                f"does not fit even at batch {floor}: estimate {format_bytes(smallest.total_bytes)} "
                f"> budget {format_bytes(usable)} (batch {batch_size} needs "
                f"{format_bytes(requested.total_bytes)})"
            ),
            **common,
        )
    steps = math.ceil(batch_size / largest)
    new_batch = max(floor, math.ceil(batch_size / steps))  # even out: same steps, smaller batch
    chosen = _estimate(new_batch, steps, **config)
    return BudgetDecision(
        action="reshape",
        batch_size=new_batch,
        accumulation_steps=steps,
        estimate_bytes=chosen.total_bytes,
        min_estimate_bytes=smallest.total_bytes,
        reason=(
            f"batch {batch_size} needs {format_bytes(requested.total_bytes)} > budget "
            f"{format_bytes(usable)}; running batch {new_batch} x {steps} accumulation steps "
            f"(effective {new_batch * steps}, estimate {format_bytes(chosen.total_bytes)})"
        ),
        **common,
    )


def constraint_value(decision: BudgetDecision) -> float:
    """The trial's Optuna constraint (``trial.set_constraint``): ``<= 0`` feasible, ``> 0`` not.

    The relative excess of the estimate over the budget: at the batch that runs for
    ``run``/``reshape`` (negative: the headroom), at the smallest batch for ``prune``.
    0 when there is no limit.
    """
    if decision.budget_bytes is None:
        return 0.0
    if decision.action == "prune":
        needed = (
            decision.min_estimate_bytes
            if decision.min_estimate_bytes is not None
            else decision.estimate_bytes
        )
    else:
        needed = decision.estimate_bytes
    if needed is None:  # after an OOM halving (not re-estimated): it runs, so it is feasible
        return 0.0
    value = (needed - decision.budget_bytes) / decision.budget_bytes
    if decision.action == "prune":
        return max(value, 1e-9)  # pruned for memory is infeasible even on a rounding tie
    return min(value, 0.0)


def _or_unknown(n: int | None) -> str:
    return "not estimated" if n is None else format_bytes(n)


def halve_for_oom(decision: BudgetDecision) -> BudgetDecision | None:
    """The retry after a runtime out-of-memory: half the batch, accumulation keeps the effective batch.

    Returns ``None`` when half the batch is below ``min_batch_size`` (the trial then fails
    with the reason) or the decision was a prune.
    """
    if decision.action == "prune":
        return None
    half = decision.batch_size // 2
    if half < max(1, decision.min_batch_size):
        return None
    target = decision.requested_batch_size
    steps = max(2, math.ceil(target / half))
    return replace(
        decision,
        action="reshape",
        batch_size=half,
        accumulation_steps=steps,
        estimate_bytes=None,
        oom_retries=decision.oom_retries + 1,
        reason=(
            f"out of memory at batch {decision.batch_size} x {decision.accumulation_steps} "
            f"(estimate {_or_unknown(decision.estimate_bytes)}, budget "
            f"{format_bytes(decision.budget_bytes)}); retrying at batch {half} x {steps} "
            f"accumulation steps (effective {half * steps})"
        ),
    )
