"""The gate's decision from two models' evidence (no MLflow: :func:`clot_hpo.registry.gate.decide`)."""

from __future__ import annotations

import pandas as pd
import pytest

from clot_hpo.errors import ConfigError
from clot_hpo.registry.gate import Evidence, GateRule, decide
from tests.support.promotion import predictions


def _evidence(
    frame: pd.DataFrame, version: str = "", digest: str | None = "d1", threshold: float = 0.5
) -> Evidence:
    return Evidence(version=version, predictions=frame, threshold=threshold, digest=digest)


WEAK, STRONG = predictions(separation=0.3, noise_seed=1), predictions(separation=1.5, noise_seed=2)


def test_accuracy_gate_uses_the_paired_difference_at_each_models_threshold() -> None:
    result = decide(_evidence(STRONG), _evidence(WEAK, "4"), GateRule(metric="accuracy"))
    assert result.decision == "promoted" and result.moves
    assert "McNemar" in result.reason and result.champion_version == "4"
    strong_acc = ((STRONG["probability"] >= 0.5) == STRONG["label"]).mean()
    weak_acc = ((WEAK["probability"] >= 0.5) == WEAK["label"]).mean()
    assert result.difference == pytest.approx(strong_acc - weak_acc)
    # A min delta larger than the interval's low end keeps the champion.
    assert result.ci_low is not None
    kept = decide(
        _evidence(STRONG), _evidence(WEAK, "4"), GateRule(metric="accuracy", min_delta=result.ci_low + 0.01)
    )
    assert kept.decision == "kept" and "--min-delta" in kept.reason


def test_the_same_digest_with_other_images_is_another_test_set() -> None:
    other_images = predictions(separation=1.5, seed=3, noise_seed=2)
    refused = decide(_evidence(other_images), _evidence(WEAK, "2"), GateRule())
    assert refused.decision == "refused" and "same dataset digest but different test images" in refused.reason
    unknown = decide(_evidence(STRONG, digest=None), _evidence(WEAK, "2"), GateRule())
    assert unknown.decision == "refused" and "not recorded" in unknown.reason
    allowed = decide(_evidence(other_images), _evidence(WEAK, "2"), GateRule(allow_different_test_sets=True))
    assert allowed.decision == "promoted" and not allowed.paired and "independent samples" in allowed.reason


def test_floors_apply_to_a_first_champion_too() -> None:
    blocked = decide(_evidence(WEAK), None, GateRule(min_sensitivity=0.99))
    assert blocked.decision == "blocked" and not blocked.moves
    assert decide(_evidence(WEAK), None, GateRule()).decision == "first champion"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"metric": "f1"}, r"--gate-metric must be one of \['auc', 'accuracy'\], but got 'f1'"),
        ({"min_delta": 1.5}, r"`-1 < --min-delta < 1` must hold, but got 1.5"),
        ({"min_sensitivity": 2.0}, r"`0 <= --min-sensitivity <= 1` must hold, but got 2.0"),
        ({"max_ece": -0.1}, r"`0 <= --max-ece <= 1` must hold, but got -0.1"),
    ],
)
def test_a_rule_states_what_it_needs(rule: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GateRule(**rule)  # type: ignore[arg-type]
