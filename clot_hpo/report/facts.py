"""The report's facts about the models, computed before anything is written.

The best completed trial of each backbone (by the one best-trial rule,
:func:`clot_hpo.util.rank_trials`), its metrics recomputed from its predictions files with the
seeds the trial used (or, for a trial that lacks them, its logged metrics), and the paired
comparisons of the backbones on the same test images. :mod:`clot_hpo.report.build` renders
them; nothing here formats text.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pandas as pd

from clot_hpo.config.schema import ExperimentConfig
from clot_hpo.errors import DataError
from clot_hpo.evaluate.metrics import binary_metrics, choose_threshold
from clot_hpo.evaluate.paired import McNemar, PairedAuc, align, delong_test, mcnemar_exact, read_predictions
from clot_hpo.evaluate.predictions import TEST_PREDICTIONS, VAL_PREDICTIONS
from clot_hpo.tracking.study_reader import FinishedStudy, TrialRecord
from clot_hpo.util import objective_value, rank_trials


@dataclass
class Candidate:
    """The best trial of one backbone, and what its files say."""

    backbone: str
    trial: TrialRecord
    objective_value: float | None
    val: pd.DataFrame | None = None
    test: pd.DataFrame | None = None
    threshold: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    from_files: bool = False


@dataclass
class Comparison:
    """One paired comparison of two backbones on the same test images."""

    a: str
    b: str
    delong: PairedAuc | None = None
    mcnemar: McNemar | None = None
    problem: str = ""
    p_holm: float | None = None


def trial_value(trial: TrialRecord, objective: str | None) -> float | None:
    """The trial's objective value, by the one rule (:func:`clot_hpo.util.objective_value`)."""
    return objective_value(trial.metrics, objective)


def best_per_backbone(record: FinishedStudy) -> list[Candidate]:
    """The best completed trial of each backbone, by the one rule (:func:`~clot_hpo.util.rank_trials`)."""
    complete = [t for t in record.trials if t.state == "COMPLETE" and t.backbone]
    ranked = rank_trials(
        complete,
        value=lambda t: trial_value(t, record.objective),
        number=lambda t: t.number,
        direction=record.direction or "maximize",
    )
    best: dict[str, Candidate] = {}
    for trial in ranked:
        if trial.backbone and trial.backbone not in best:
            best[trial.backbone] = Candidate(trial.backbone, trial, trial_value(trial, record.objective))
    return [best[k] for k in sorted(best)]


def _logged_metrics(trial: TrialRecord) -> dict[str, float]:
    """The trial's logged test metrics, without their ``test_`` prefix."""
    return {k[len("test_") :]: v for k, v in trial.metrics.items() if k.startswith("test_")}


def evaluate_candidate(record: FinishedStudy, cand: Candidate, settings: ExperimentConfig) -> None:
    """Fill the candidate's metrics: from its predictions files, else from its logged metrics."""
    val_path = record.trial_file(cand.trial, VAL_PREDICTIONS)
    test_path = record.trial_file(cand.trial, TEST_PREDICTIONS)
    if val_path is None or test_path is None:
        cand.metrics = _logged_metrics(cand.trial)
        cand.threshold = cand.trial.metrics.get("threshold")
        return
    cand.val, cand.test = read_predictions(val_path), read_predictions(test_path)
    cand.threshold = choose_threshold(
        cand.val["label"],
        cand.val["probability"],
        method=settings.evaluation.threshold,
        target_sensitivity=settings.evaluation.target_sensitivity,
    )
    # The trial's own seed for its test intervals (evaluate_trial: seed + 1), so the bootstrap
    # intervals here are the ones the trial logged.
    cand.metrics = binary_metrics(
        cand.test["label"],
        cand.test["probability"],
        threshold=cand.threshold,
        confidence=settings.evaluation.confidence_level,
        n_bootstrap=settings.evaluation.bootstrap_samples,
        seed=settings.seed + cand.trial.number + 1,
        prevalence=settings.evaluation.prevalence,
    )
    cand.from_files = True


def compare(cands: list[Candidate], confidence: float) -> list[Comparison]:
    """DeLong and McNemar for every pair of backbones with predictions (Holm-adjusted when several)."""
    with_files = [c for c in cands if c.from_files]
    out = []
    for a, b in itertools.combinations(with_files, 2):
        comparison = Comparison(a.backbone, b.backbone)
        assert a.test is not None and b.test is not None
        try:
            joined = align(a.test, b.test, names=(a.backbone, b.backbone))
        except DataError as exc:
            comparison.problem = str(exc)
            out.append(comparison)
            continue
        index_a = a.test.set_index("key")["probability"]
        index_b = b.test.set_index("key")["probability"]
        pa, pb = index_a.loc[joined["key"]].to_numpy(), index_b.loc[joined["key"]].to_numpy()
        y = joined["label"].to_numpy()
        try:
            comparison.delong = delong_test(y, pa, pb, confidence=confidence)
        except ValueError as exc:
            comparison.problem = f"DeLong's test is undefined here: {exc}"
        assert a.threshold is not None and b.threshold is not None
        comparison.mcnemar = mcnemar_exact(
            y, (pa >= a.threshold).astype(int), (pb >= b.threshold).astype(int)
        )
        out.append(comparison)
    tested = [c for c in out if c.delong is not None]
    if len(tested) > 1:
        from statsmodels.stats.multitest import multipletests

        adjusted = multipletests([c.delong.p_value for c in tested if c.delong], method="holm")[1]
        for c, p in zip(tested, adjusted, strict=True):
            c.p_holm = float(p)
    return out


@dataclass
class ModelFacts:
    """The backbones' best trials, evaluated, and their paired comparisons."""

    candidates: list[Candidate]
    comparisons: list[Comparison]


def model_facts(study: FinishedStudy) -> ModelFacts:
    """Choose, evaluate and compare the best trial of each backbone (see the module docstring)."""
    settings = study.settings  # the recorded config, else the schema's defaults
    cands = best_per_backbone(study)
    for cand in cands:
        evaluate_candidate(study, cand, settings)
    return ModelFacts(cands, compare(cands, settings.evaluation.confidence_level))


__all__ = [
    "Candidate",
    "Comparison",
    "ModelFacts",
    "best_per_backbone",
    "compare",
    "evaluate_candidate",
    "model_facts",
    "trial_value",
]
