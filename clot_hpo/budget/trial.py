"""One trial's VRAM plan, read from the model it built: what it trains and the batch it runs.

Build first, plan second: the plan then sees the weights the backbone actually got (offline,
ImageNet weights fall back to random initialization, and a random base trains whole), and
the backbone is built once. The batch size, which the plan may change, is no part of the
model's graph. Nothing here records the plan: the search owns the trial it is recorded on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clot_hpo.budget.device import VramBudget, detect_budget
from clot_hpo.budget.estimator import backbone_profile, profile_model
from clot_hpo.budget.policy import BudgetDecision, constraint_value, plan_trial


def planned_trainable(*, pretrained: bool, unfreeze_fraction: float, freeze_epochs: int, epochs: int) -> str:
    """What the VRAM plan trains: ``"head"`` only when a pretrained base stays frozen all trial.

    ``pretrained`` is whether the built backbone got pretrained weights
    (``ClotHyperModel.pretrained``), not whether they were asked for: offline, ImageNet weights
    fall back to random initialization, and a random base is trained whole.
    """
    frozen_all_along = unfreeze_fraction <= 0 or freeze_epochs >= epochs
    return "head" if pretrained and frozen_all_along else "all"


def plan_budget(
    config: Any,
    hypermodel: Any,
    settings: Any,
    model: Any,
    *,
    budget: VramBudget,
    epochs: int,
    mixed_precision: bool,
) -> tuple[BudgetDecision, str]:
    """The trial's VRAM plan, read from the model it will train, and what it plans to train.

    Args:
        config: the experiment config (``budget.min_batch_size``).
        hypermodel: the ``ClotHyperModel`` that built ``model`` (``pretrained``).
        settings: the trial's ``TrialSettings``.
        model: the built model (its ``backbone`` layer is profiled).
        budget: the device's VRAM budget.
        epochs: the epochs the trial runs.
        mixed_precision: whether training runs in float16.

    Returns:
        The :class:`BudgetDecision` and the ``trainable`` mode it was planned for.
    """
    trainable = planned_trainable(
        pretrained=hypermodel.pretrained,
        unfreeze_fraction=float(settings["unfreeze_fraction"]),
        freeze_epochs=settings.freeze_epochs,
        epochs=epochs,
    )
    backbone = model.get_layer("backbone")
    if any(d is None for d in tuple(backbone.inputs[0].shape)[1:]):
        # Built for any side (progressive resizing, a resolution fidelity): planned at the
        # largest, the trial's image_size, on a copy built at that size.
        profile = backbone_profile(settings.backbone, settings.image_size)
    else:
        profile = profile_model(backbone, backbone=settings.backbone, image_size=settings.image_size)
    decision = plan_trial(
        backbone=settings.backbone,
        image_size=settings.image_size,
        batch_size=settings.batch_size,
        budget=budget,
        mixed_precision=mixed_precision,
        trainable=trainable,
        optimizer=str(settings["optimizer"]),
        min_batch_size=config.budget.min_batch_size,
        profile=profile,
    )
    return decision, trainable


@dataclass(frozen=True)
class TrialBudget:
    """A trial's plan: the decision, what it trains, where the budget came from, the batch it runs.

    Attributes:
        decision: the policy's :class:`BudgetDecision`.
        trainable: ``"head"`` or ``"all"`` (:func:`planned_trainable`).
        source: the budget's description (``VramBudget.describe``).
        batch_size: images per step; the OOM retry's override when it set one.
        accumulation_steps: steps per optimizer update; likewise.
    """

    decision: BudgetDecision
    trainable: str
    source: str
    batch_size: int
    accumulation_steps: int

    @property
    def over_budget(self) -> bool:
        """Whether not even the smallest batch fits: the trial is pruned before training."""
        return self.decision.action == "prune"

    @property
    def constraint(self) -> float:
        """The value of the sampler's VRAM constraint (<= 0 fits)."""
        return float(constraint_value(self.decision))

    def attrs(self) -> dict[str, Any]:
        """The ``budget_*`` attributes a trial records, in the order they are recorded."""
        return {
            "budget_trainable": self.trainable,
            **{f"budget_{key}": value for key, value in self.decision.to_attrs().items()},
            "budget_source": self.source,
        }


def plan_trial_budget(
    config: Any,
    hypermodel: Any,
    settings: Any,
    model: Any,
    *,
    epochs: int,
    mixed_precision: bool,
    batch_size: int | None = None,
    accumulation_steps: int | None = None,
) -> TrialBudget:
    """Detect the device's budget (``config.budget``) and plan the built ``model`` against it.

    Args:
        config: the experiment config.
        hypermodel: the ``ClotHyperModel`` that built ``model``.
        settings: the trial's ``TrialSettings``.
        model: the built model.
        epochs: the epochs the trial runs.
        mixed_precision: whether training runs in float16.
        batch_size: the OOM retry's batch size (None: the plan's).
        accumulation_steps: the OOM retry's accumulation steps (None: the plan's).
    """
    budget = detect_budget(config.budget)
    decision, trainable = plan_budget(
        config, hypermodel, settings, model, budget=budget, epochs=epochs, mixed_precision=mixed_precision
    )
    return TrialBudget(
        decision=decision,
        trainable=trainable,
        source=budget.describe(),
        batch_size=batch_size or decision.batch_size,
        accumulation_steps=accumulation_steps or decision.accumulation_steps,
    )
