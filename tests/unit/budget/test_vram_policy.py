"""Per-trial policy: run, reshape with accumulation, prune; Optuna constraint; OOM halving."""

from __future__ import annotations

import json

import pytest

from clot_hpo.budget import VramBudget, constraint_value, estimate_vram, halve_for_oom, plan_trial
from clot_hpo.budget.policy import BudgetDecision, largest_fitting_batch
from clot_hpo.errors import ConfigError

CFG = dict(backbone="tiny_cnn", image_size=32, mixed_precision=False)


def _budget(total: int) -> VramBudget:
    return VramBudget(total_bytes=total, margin=0.0, source="config")


def _estimate(batch: int, steps: int = 1) -> int:
    return estimate_vram("tiny_cnn", 32, batch, accumulation_steps=steps).total_bytes


def test_fitting_configuration_runs_as_sampled() -> None:
    decision = plan_trial(**CFG, batch_size=8, budget=_budget(_estimate(8)))
    assert (decision.action, decision.batch_size, decision.accumulation_steps) == ("run", 8, 1)
    assert decision.estimate_bytes == _estimate(8)
    assert constraint_value(decision) <= 0


def test_too_large_batch_is_reshaped_keeping_the_effective_batch() -> None:
    decision = plan_trial(**CFG, batch_size=8, budget=_budget(_estimate(4, steps=2)))
    assert (decision.action, decision.batch_size, decision.accumulation_steps) == ("reshape", 4, 2)
    assert decision.effective_batch_size == 8
    assert decision.estimate_bytes == _estimate(4, steps=2) <= decision.budget_bytes
    assert decision.requested_estimate_bytes == _estimate(8) > decision.budget_bytes
    assert "batch 8" in decision.reason and "4 x 2" in decision.reason
    assert constraint_value(decision) <= 0


def test_reshaped_batch_is_evened_out_to_a_divisor() -> None:
    # Up to 6 fits; 10 needs two steps either way, and 5 x 2 keeps exactly 10.
    decision = plan_trial(**CFG, batch_size=10, budget=_budget(_estimate(6, steps=2)))
    assert (decision.batch_size, decision.accumulation_steps) == (5, 2)
    assert decision.effective_batch_size == 10


def test_nothing_fits_prunes_with_estimate_and_budget_in_the_reason() -> None:
    budget = _budget(_estimate(2, steps=2) - 1)
    decision = plan_trial(**CFG, batch_size=16, budget=budget)
    assert decision.action == "prune"
    assert decision.requested_batch_size == 16
    assert "estimate" in decision.reason and "budget" in decision.reason
    assert decision.min_estimate_bytes == _estimate(2, steps=2)
    assert constraint_value(decision) > 0


def test_min_batch_size_is_respected() -> None:
    budget = _budget(_estimate(3, steps=2))  # 3 fits with accumulation, 4 does not
    assert plan_trial(**CFG, batch_size=16, budget=budget, min_batch_size=2).batch_size == 3
    assert plan_trial(**CFG, batch_size=16, budget=budget, min_batch_size=4).action == "prune"


def test_no_limit_runs_and_records_the_estimate() -> None:
    decision = plan_trial(**CFG, batch_size=64, budget=VramBudget.unlimited("CPU"))
    assert decision.action == "run" and decision.batch_size == 64
    assert decision.budget_bytes is None
    assert decision.estimate_bytes == _estimate(64)
    assert constraint_value(decision) == 0.0


def test_real_backbones_on_four_gigabytes() -> None:
    four = VramBudget.from_gb(4)
    for backbone, size in (("efficientnet_b1", 240), ("resnet50", 224)):
        decision = plan_trial(
            backbone=backbone, image_size=size, batch_size=16, budget=four, mixed_precision=True
        )
        assert decision.action == "run", decision.reason
    big = plan_trial(
        backbone="efficientnet_b1", image_size=480, batch_size=64, budget=four, mixed_precision=False
    )
    assert big.action in ("reshape", "prune")
    assert big.requested_estimate_bytes > four.usable_bytes
    if big.action == "reshape":
        assert big.estimate_bytes <= four.usable_bytes and big.batch_size < 64


def test_largest_fitting_batch_is_the_boundary() -> None:
    budget = _estimate(7)
    assert largest_fitting_batch(**CFG, budget_bytes=budget) == 7
    assert largest_fitting_batch(**CFG, budget_bytes=_estimate(1) - 1) is None


def test_attrs_are_flat_and_json_able() -> None:
    decision = plan_trial(**CFG, batch_size=8, budget=_budget(_estimate(4, steps=2)))
    attrs = decision.to_attrs()
    assert json.loads(json.dumps(attrs)) == attrs
    assert all(not isinstance(v, (dict, list)) for v in attrs.values())
    assert attrs["action"] == "reshape" and attrs["accumulation_steps"] == 2


def test_halve_for_oom_doubles_accumulation_until_the_minimum() -> None:
    first = plan_trial(**CFG, batch_size=16, budget=VramBudget.unlimited(), min_batch_size=2)
    retry = halve_for_oom(first)
    assert retry is not None
    assert (retry.action, retry.batch_size, retry.accumulation_steps) == ("reshape", 8, 2)
    assert retry.oom_retries == 1 and "out of memory" in retry.reason
    again = halve_for_oom(retry)
    assert again is not None and (again.batch_size, again.accumulation_steps) == (4, 4)
    assert again.effective_batch_size == 16
    small = BudgetDecision(
        action="run",
        batch_size=2,
        accumulation_steps=1,
        requested_batch_size=2,
        estimate_bytes=1,
        budget_bytes=10,
        reason="",
        min_batch_size=2,
    )
    assert halve_for_oom(small) is None


def test_decision_round_trips_through_prefixed_attrs() -> None:
    decision = plan_trial(**CFG, batch_size=8, budget=_budget(_estimate(4, steps=2)), min_batch_size=3)
    attrs = {f"budget_{k}": v for k, v in json.loads(json.dumps(decision.to_attrs())).items()}
    rebuilt = BudgetDecision.from_attrs(attrs, prefix="budget_")
    assert rebuilt == decision
    assert halve_for_oom(rebuilt) is None  # 4 // 2 = 2 is below min_batch_size 3
    with pytest.raises(ConfigError, match="action"):
        BudgetDecision.from_attrs({"batch_size": 4})


def test_halve_for_oom_gives_up_on_a_pruned_trial() -> None:
    pruned = plan_trial(**CFG, batch_size=16, budget=_budget(1))
    assert pruned.action == "prune"
    assert halve_for_oom(pruned) is None


@pytest.mark.parametrize("bad", [0, -1, True])
def test_bad_min_batch_size_is_a_config_error(bad: int) -> None:
    with pytest.raises(ConfigError, match="min_batch_size"):
        plan_trial(**CFG, batch_size=8, budget=_budget(10**12), min_batch_size=bad)
