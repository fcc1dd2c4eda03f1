"""The metric catalogue: entries, keys, the one format, and the one best-trial rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from clot_hpo.evaluate import (
    Metric,
    binary_metrics,
    format_estimate,
    format_interval,
    get_metric,
    headline_keys,
    metric_keys,
    metric_names,
    register_metric,
    summary_metrics,
    table_metrics,
    unregister_metric,
)
from clot_hpo.evaluate.report import format_table
from clot_hpo.util import objective_value, rank_trials


def test_the_built_in_entries_and_their_keys() -> None:
    assert metric_names()[:10] == (
        "accuracy",
        "precision",
        "recall",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "auc",
        "f1",
        "pr_auc",
    )
    auc = get_metric("test_auc")
    assert (auc.label, auc.direction, auc.interval) == ("AUC", "maximize", "bootstrap")
    assert get_metric("ece").direction == "minimize" and not get_metric("ece").has_interval
    assert auc.keys("val") == ("val_auc", "val_auc_ci_low", "val_auc_ci_high")
    assert headline_keys() == ("test_auc", "test_auc_ci_low", "test_auc_ci_high")
    assert [m.name for m in summary_metrics()] == ["accuracy", "sensitivity", "specificity", "auc"]
    assert "test_brier" in metric_keys("test") and "test_brier_ci_low" not in metric_keys("test")
    with pytest.raises(KeyError, match="not in the catalogue"):
        get_metric("nope")


def test_registering_checks_the_entry() -> None:
    with pytest.raises(ValueError, match="already in the catalogue"):
        register_metric(Metric("auc", "AUC again", lambda s: 0.5))
    with pytest.raises(ValueError, match="lower case"):
        register_metric(Metric("Bad-Name", "Bad", lambda s: 0.5))
    with pytest.raises(ValueError, match="interval"):
        register_metric(Metric("odd", "Odd", lambda s: 0.5, interval="normal"))  # type: ignore[arg-type]
    assert "odd" not in metric_names()


def test_each_interval_kind_reaches_binary_metrics_and_the_table() -> None:
    y = [0, 0, 0, 1, 1, 1, 0, 1]
    p = [0.1, 0.4, 0.6, 0.7, 0.8, 0.3, 0.2, 0.9]
    entries = [
        Metric("tp_share", "TP share", lambda s: (s.counts[3], s.y.size), interval="wilson"),
        Metric("mean_score", "Mean score", lambda s: float(s.p.mean()), interval="bootstrap"),
        Metric("fixed", "Fixed", lambda s: (0.5, 0.25, 0.75), interval="derived"),
        Metric("plain", "Plain", lambda s: 2.0, table=False),
        Metric("absent", "Absent", lambda s: None),
    ]
    for entry in entries:
        register_metric(entry)
    try:
        m = binary_metrics(y, p, threshold=0.5, n_bootstrap=200)
        assert m["tp_share"] == 3 / 8 and m["tp_share_ci_low"] < 3 / 8 < m["tp_share_ci_high"]
        assert m["mean_score"] == pytest.approx(sum(p) / 8)
        assert m["mean_score_ci_low"] < m["mean_score"] < m["mean_score_ci_high"]
        assert (m["fixed"], m["fixed_ci_low"], m["fixed_ci_high"]) == (0.5, 0.25, 0.75)
        assert m["plain"] == 2.0 and "plain_ci_low" not in m
        assert "absent" not in m
        table = format_table({"Test": m})
        assert "| PR AUC | TP share | Mean score | Fixed |" in table.splitlines()[0]
        assert "0.500 (0.250–0.750)" in table and "Plain" not in table
        assert [t.name for t in table_metrics()][-4:] == ["tp_share", "mean_score", "fixed", "absent"]
    finally:
        for entry in entries:
            unregister_metric(entry.name)
    assert "tp_share" not in binary_metrics(y, p, threshold=0.5, n_bootstrap=0)


def test_the_one_format() -> None:
    values = {"test_auc": 0.91234, "test_auc_ci_low": 0.8712, "test_auc_ci_high": 0.9409, "x": 1.0}
    assert format_estimate(values, "test_auc") == "0.912 (0.871–0.941)"
    assert format_estimate(values, "x") == "1.000"
    assert format_estimate(values, "missing") == "–"
    assert format_interval(None, 0.3) == "–" and format_interval(0.1, 0.3, 2) == "0.10–0.30"


def _trial(number: int | None, **metrics: float) -> SimpleNamespace:
    return SimpleNamespace(number=number, metrics=metrics)


def test_one_rule_for_a_trials_value_and_the_best_trial() -> None:
    # Optuna's value first, the objective's metric for runs without one, nothing non-finite.
    assert objective_value({"value": 0.7, "val_auc": 0.9}, "val_auc") == 0.7
    assert objective_value({"val_auc": 0.9}, "val_auc") == 0.9
    assert objective_value({"value": float("nan"), "val_auc": 0.9}, "val_auc") == 0.9
    assert objective_value({"val_auc": float("inf")}, "val_auc") is None
    trials = [
        _trial(3, value=0.8),
        _trial(1, value=0.8),
        _trial(2, value=0.6),
        _trial(0),
        _trial(None, value=0.9),
    ]

    def ranked(direction: str) -> list[int | None]:
        return [
            t.number
            for t in rank_trials(
                trials,
                value=lambda t: objective_value(t.metrics, None),
                number=lambda t: t.number,
                direction=direction,
            )
        ]

    # Ties go to the lower trial number, as in Optuna; a trial without a value is left out.
    assert ranked("maximize") == [None, 1, 3, 2]
    assert ranked("minimize") == [2, 1, 3, None]
    with pytest.raises(ValueError, match="maximize or minimize"):
        ranked("up")


def test_predictive_values_at_a_deployment_prevalence() -> None:
    from statsmodels.stats.proportion import proportion_confint

    from clot_hpo.evaluate.metrics import positives_for_width, wilson_width

    # 10 positives (8 caught), 90 negatives (81 cleared): sensitivity 0.8, specificity 0.9.
    y = [1] * 10 + [0] * 90
    p = [0.9] * 8 + [0.1] * 2 + [0.9] * 9 + [0.1] * 81
    own = binary_metrics(y, p, threshold=0.5, n_bootstrap=0)
    assert own["ppv"] == pytest.approx(8 / 17) and own["npv"] == pytest.approx(81 / 83)
    rare = binary_metrics(y, p, threshold=0.5, n_bootstrap=0, prevalence=0.01)
    assert rare["ppv"] == pytest.approx(0.8 * 0.01 / (0.8 * 0.01 + 0.1 * 0.99))
    sens_low, sens_high = proportion_confint(8, 10, method="wilson")
    spec_low, spec_high = proportion_confint(81, 90, method="wilson")
    assert rare["ppv_ci_low"] == pytest.approx(sens_low * 0.01 / (sens_low * 0.01 + (1 - spec_low) * 0.99))
    assert rare["npv_ci_high"] == pytest.approx(
        spec_high * 0.99 / (spec_high * 0.99 + (1 - sens_high) * 0.01)
    )
    assert rare["ppv_ci_low"] <= rare["ppv"] <= rare["ppv_ci_high"]
    # Nothing called positive: PPV undefined, 0 with [0, 1] like precision.
    none = binary_metrics(y, [0.1] * 100, threshold=0.5, n_bootstrap=0, prevalence=0.2)
    assert (none["ppv"], none["ppv_ci_low"], none["ppv_ci_high"]) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"`0 < prevalence < 1` must hold, but got 1.5"):
        binary_metrics(y, p, threshold=0.5, prevalence=1.5)

    # How many positives a sensitivity interval of a given width needs (Wilson, by bisection).
    n = positives_for_width(0.8, 0.2)
    assert wilson_width(0.8, n) <= 0.2 < wilson_width(0.8, n - 1)
    low, high = proportion_confint(int(0.8 * 100), 100, method="wilson")
    assert wilson_width(0.8, 100) == pytest.approx(high - low)


def test_the_threshold_rule_sensitivity_at() -> None:
    from clot_hpo.config.schema import EvaluationConfig
    from clot_hpo.errors import ConfigError
    from clot_hpo.evaluate import choose_threshold
    from clot_hpo.evaluate.metrics import threshold_rule

    assert EvaluationConfig(threshold="sensitivity@0.950").threshold == "sensitivity@0.95"
    for bad in ("sensitivity@1.5", "sensitivity@", "f1", "sensitivity@0"):
        with pytest.raises(ValueError, match="evaluation.threshold must be youden, target_sensitivity or"):
            EvaluationConfig(threshold=bad)
    assert threshold_rule("sensitivity@0.8") == ("target_sensitivity", 0.8)
    with pytest.raises(ConfigError, match="or sensitivity@S, but got 'f1'"):
        threshold_rule("f1")
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.6, 0.35, 0.5, 0.7, 0.8, 0.9]
    by_rule = choose_threshold(y, p, method="sensitivity@0.8")
    assert by_rule == choose_threshold(y, p, method="target_sensitivity", target_sensitivity=0.8) == 0.5


def test_an_intervals_level_is_written_as_people_write_it() -> None:
    from clot_hpo.evaluate.catalogue import format_level, interval_note

    assert [format_level(c) for c in (0.95, 0.975, 0.9, 0.99)] == ["95%", "97.5%", "90%", "99%"]
    assert interval_note(0.975, 200).startswith("97.5% intervals: Wilson for ")
