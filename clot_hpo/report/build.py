"""What the report says, computed from a study's tracked record (:mod:`clot_hpo.tracking.study_reader`).

Every number about the models comes from the trials' predictions files (``val_predictions.csv``
for the threshold, ``test_predictions.csv`` for everything else), with the same functions and
seeds the trials used, so the table reproduces what each trial logged and anyone holding the
files can recompute it. Trials that lack the files (studies run before they existed) are
reported from their logged metrics, and left out of the paired tests and calibration.

The models' facts (best trials, their metrics, the paired tests) are computed by
:mod:`clot_hpo.report.facts`; this module writes the sections from them and from the study,
as blocks that :mod:`clot_hpo.render.document` renders to Markdown and HTML.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from clot_hpo.config.schema import ExperimentConfig
from clot_hpo.data.subgroups import subgroup_columns
from clot_hpo.evaluate.catalogue import (
    format_estimate,
    format_level,
    interval_note,
    summary_metrics,
    table_metrics,
)
from clot_hpo.evaluate.metrics import (
    binary_metrics,
    describe_threshold_rule,
    expected_calibration_error,
    positives_for_width,
)
from clot_hpo.render.document import Document, Figure, Heading, Paragraph, Table
from clot_hpo.report import figures
from clot_hpo.report.facts import Candidate, Comparison, model_facts, trial_value
from clot_hpo.tracking.study_reader import FinishedStudy, TrialRecord
from clot_hpo.util import redact_url

log = logging.getLogger(__name__)

ALPHA = 0.05
# Params a trial logs that are bookkeeping, not searched hyperparameters.
NOT_SEARCHED = {"batch_size_run", "accumulation_steps", "mixed_precision", "epochs", "class_weight_run"}


# ----- formatting ---------------------------------------------------------------------------
def p_text(p: float) -> str:
    """A p-value as a reader expects it (``< 0.001`` below that)."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_is(p: float) -> str:
    """``p = 0.046`` or ``p < 0.001``, for a sentence."""
    text = p_text(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def duration(seconds: float | None) -> str:
    """``1 h 02 min``, ``3 min 05 s`` or ``42 s``."""
    if seconds is None:
        return "not recorded"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


# ----- the models ---------------------------------------------------------------------------
def verdict(c: Comparison) -> str:
    """One plain sentence on whether the AUC difference is significant at 0.05."""
    if c.delong is None:
        return f"{c.a} and {c.b} could not be compared: {c.problem}"
    d = c.delong
    p = c.p_holm if c.p_holm is not None else d.p_value
    adjusted = " (Holm-adjusted for the several comparisons)" if c.p_holm is not None else ""
    interval = f"{format_level(d.confidence)} interval"
    if p < ALPHA:
        better, worse = (c.a, c.b) if d.difference > 0 else (c.b, c.a)
        return (
            f"**{better} has a higher AUC than {worse}, and the difference is statistically significant "
            f"at 0.05** (DeLong {p_is(p)}{adjusted}; difference {d.difference:+.3f}, {interval} "
            f"{d.ci_low:+.3f} to {d.ci_high:+.3f})."
        )
    return (
        f"**The AUC difference between {c.a} and {c.b} is not statistically significant at 0.05** "
        f"(DeLong {p_is(p)}{adjusted}; difference {d.difference:+.3f}, {interval} {d.ci_low:+.3f} "
        f"to {d.ci_high:+.3f}, which includes 0): on this test set, neither backbone is shown to be better."
    )


# ----- the report ---------------------------------------------------------------------------
@dataclass
class Report:
    """The document and the facts a caller (or a test) may want without parsing it."""

    document: Document
    candidates: list[Candidate]
    comparisons: list[Comparison]
    notes: list[str] = field(default_factory=list)


def build_report(record: FinishedStudy) -> Report:
    """Compute every section of the study's report (see the module docstring)."""
    settings = record.settings  # the recorded config, else the schema's defaults
    models = model_facts(record)
    cands = models.candidates
    doc = Document(f"Study report: {record.study}")
    report = Report(doc, cands, models.comparisons)
    _intro(doc, record)
    _results(doc, report, record, settings)
    _paired(doc, report)
    _calibration(doc, report)
    _search(doc, record, cands)
    _data(doc, record, cands, settings)
    return report


def _intro(doc: Document, record: FinishedStudy) -> None:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    doc.add(
        Paragraph(
            f"Experiment `{record.experiment}` at `{redact_url(record.tracking_uri)}`, study run "
            f"`{record.run_id}` ({record.status.lower()}); generated {when} by `clot-hpo report`. "
            "Every figure about the models is recomputed from the trials' `val_predictions.csv` and "
            "`test_predictions.csv` artifacts (image key = content hash, label, probability)."
        )
    )
    if record.config is not None and record.config.data.synthetic is not None:
        doc.add(
            Paragraph(
                "**Synthetic data, for demonstration only.** These images were generated by "
                "`clot-hpo make-synthetic`; nothing here says how a model performs on real clot images.",
                kind="note",
            )
        )
    doc.add(Paragraph("Research tool, not a diagnostic device.", kind="note"))


def _results(doc: Document, report: Report, record: FinishedStudy, settings: ExperimentConfig) -> None:
    doc.add(Heading("Results on the test split", anchor="results"))
    cands = report.candidates
    if not cands:
        doc.add(Paragraph("No trial completed: there is nothing to report on.", kind="note"))
        return
    shown = table_metrics()
    columns = ["Backbone", "Trial", "Threshold", *(m.label for m in shown), "n"]
    rows = []
    for c in cands:
        n = str(len(c.test)) if c.test is not None else "–"
        threshold = f"{c.threshold:.3f}" if c.threshold is not None else "–"
        rows.append(
            [
                c.backbone,
                str(c.trial.number),
                threshold,
                *(format_estimate(c.metrics, m.name) for m in shown),
                n,
            ]
        )
    how = describe_threshold_rule(settings.evaluation.threshold, settings.evaluation.target_sensitivity)
    doc.add(
        Table(
            columns,
            rows,
            caption=(
                f"The best trial of each backbone (by {record.objective or 'the objective'} on validation), "
                f"at its threshold chosen on the validation split ({how}). "
                + interval_note(
                    settings.evaluation.confidence_level,
                    settings.evaluation.bootstrap_samples,
                    settings.evaluation.prevalence,
                )
            ),
            numeric_from=1,
            ident="results-table",
        )
    )
    tests = {c.backbone: set(c.test["key"]) for c in cands if c.test is not None}
    if len(tests) > 1:
        same = len({frozenset(k) for k in tests.values()}) == 1
        n_images = len(next(iter(tests.values())))
        doc.add(
            Paragraph(
                f"All backbones were scored on the same {n_images} test images (identical image keys)."
                if same
                else "The backbones' test sets differ (their image keys do not match): the rows are not "
                "comparable and no paired test is possible.",
                kind="" if same else "note",
            )
        )
    for note in few_positives(cands, settings):
        report.notes.append(note)
        doc.add(Paragraph(note, kind="note"))
    missing = [c for c in cands if not c.from_files]
    if missing:
        names = ", ".join(f"{c.backbone} (trial {c.trial.number})" for c in missing)
        note = (
            f"No predictions files for {names}: a run from before trials kept them. Its row shows the "
            "metrics the trial logged; it is left out of the paired tests and calibration."
        )
        report.notes.append(note)
        doc.add(Paragraph(note, kind="note"))


def few_positives(cands: list[Candidate], settings: ExperimentConfig) -> list[str]:
    """One sentence per model whose test split has too few positives for the stated interval width.

    The width is ``evaluation.max_interval_width``, of the sensitivity's Wilson interval at the
    sensitivity observed; the sentence says how many positives would give it.
    """
    out, widest = [], settings.evaluation.max_interval_width
    for c in cands:
        if c.test is None or "sensitivity" not in c.metrics:
            continue
        positives = int(c.test["label"].sum())
        sensitivity = c.metrics["sensitivity"]
        width = c.metrics.get("sensitivity_ci_high", 1.0) - c.metrics.get("sensitivity_ci_low", 0.0)
        if width <= widest:
            continue
        needed = positives_for_width(sensitivity, widest, settings.evaluation.confidence_level)
        out.append(
            f"**Too few positives in the test split for {c.backbone}:** {positives} clot image(s) give a "
            f"sensitivity interval {width:.2f} wide ({format_estimate(c.metrics, 'sensitivity')}), "
            f"wider than {widest:g} (evaluation.max_interval_width); about {needed} "
            f"positives would narrow it to {widest:g} at this sensitivity."
        )
    return out


def _paired(doc: Document, report: Report) -> None:
    doc.add(Heading("Paired comparison of the backbones", anchor="paired"))
    with_files = [c for c in report.candidates if c.from_files]
    if len(with_files) < 2:
        why = (
            f"Only one backbone ({with_files[0].backbone}) has a completed trial with predictions files"
            if with_files
            else "No backbone has a completed trial with predictions files"
        )
        if len(report.candidates) > len(with_files):
            why += " (the other rows come from older runs without them)"
        note = f"{why}: no paired comparison. A study over two or more backbones makes one."
        report.notes.append(note)
        doc.add(Paragraph(note, kind="note"))
        return
    rows, mc_rows, level = [], [], "95%"
    for c in report.comparisons:
        if c.delong is not None:
            d = c.delong
            level = format_level(d.confidence)  # one study, one evaluation.confidence_level
            rows.append(
                [
                    f"{c.a} − {c.b}",
                    f"{d.auc_a:.3f}",
                    f"{d.auc_b:.3f}",
                    f"{d.difference:+.3f}",
                    f"{d.ci_low:+.3f} to {d.ci_high:+.3f}",
                    p_text(d.p_value),
                    p_text(c.p_holm) if c.p_holm is not None else "–",
                    str(d.n),
                ]
            )
        if c.mcnemar is not None:
            m = c.mcnemar
            mc_rows.append(
                [
                    f"{c.a} vs {c.b}",
                    f"{m.accuracy_a:.3f}",
                    f"{m.accuracy_b:.3f}",
                    str(m.b),
                    str(m.c),
                    p_text(m.p_value),
                    str(m.n),
                ]
            )
    if rows:
        doc.add(
            Table(
                [
                    "Comparison",
                    "AUC A",
                    "AUC B",
                    "Difference",
                    f"{level} interval",
                    "p (DeLong)",
                    "p (Holm)",
                    "n",
                ],
                rows,
                caption="DeLong's test for two correlated AUCs on the same test images (A − B).",
                ident="delong-table",
            )
        )
    if mc_rows:
        doc.add(
            Table(
                [
                    "Accuracy A",
                    "Accuracy B",
                    "A right, B wrong",
                    "B right, A wrong",
                    "p (McNemar exact)",
                    "n",
                ],
                mc_rows,
                caption="McNemar's exact test on the discordant images, each model at its own threshold.",
                ident="mcnemar-table",
            )
        )
    for c in report.comparisons:
        doc.add(Paragraph(verdict(c), kind="finding"))
        if c.mcnemar is not None:
            m = c.mcnemar
            sig = "is" if m.p_value < ALPHA else "is not"
            doc.add(
                Paragraph(
                    f"Accuracy: {c.a} {m.accuracy_a:.3f} against {c.b} {m.accuracy_b:.3f}; the difference "
                    f"{sig} significant at 0.05 (McNemar exact {p_is(m.p_value)}, {m.b} + {m.c} "
                    "discordant images)."
                )
            )


def _calibration(doc: Document, report: Report) -> None:
    doc.add(Heading("Calibration", anchor="calibration"))
    with_files = [c for c in report.candidates if c.from_files and c.test is not None]
    if not with_files:
        doc.add(Paragraph("No predictions files: calibration cannot be computed.", kind="note"))
        return
    rows = []
    for c in with_files:
        assert c.test is not None
        y, p = c.test["label"].to_numpy(), c.test["probability"].to_numpy()
        rows.append(
            [
                c.backbone,
                f"{expected_calibration_error(y, p):.3f}",
                f"{c.metrics.get('brier', float('nan')):.3f}",
                f"{p.mean():.3f}",
                f"{y.mean():.3f}",
                str(y.size),
            ]
        )
    doc.add(
        Table(
            ["Backbone", "ECE", "Brier score", "Mean probability", "Share of clots", "n"],
            rows,
            caption="Test split. ECE over 10 equal-width bins (0 is perfect); Brier score = mean squared "
            "error of the probability (0 is perfect, 0.25 is a constant 0.5).",
            ident="calibration-table",
        )
    )
    curves = {c.backbone: (c.test["label"], c.test["probability"]) for c in with_files if c.test is not None}
    doc.add(
        Figure(
            "reliability.png",
            figures.reliability_png(curves),
            "Reliability diagram: points on the diagonal are calibrated; numbers are images per bin.",
        )
    )


def _search(doc: Document, record: FinishedStudy, cands: list[Candidate]) -> None:
    doc.add(Heading("The search", anchor="search"))
    _states(doc, record)
    _budget(doc, record)
    complete = [
        (t, v)
        for t in record.trials
        if t.state == "COMPLETE" and (v := trial_value(t, record.objective)) is not None
    ]
    _history(doc, record, complete)
    _importances(doc, record, complete)
    _best_params(doc, cands)


def _states(doc: Document, record: FinishedStudy) -> None:
    """Trials by state, per backbone and in all."""
    states = {s: sum(t.state == s for t in record.trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    by_backbone: dict[str, dict[str, int]] = {}
    for t in record.trials:
        row = by_backbone.setdefault(t.backbone or "(not built)", dict.fromkeys(states, 0))
        row[t.state] = row.get(t.state, 0) + 1
    rows = [
        [b, *(str(v.get(s, 0)) for s in states), str(sum(v.values()))] for b, v in sorted(by_backbone.items())
    ]
    rows.append(["all", *(str(v) for v in states.values()), str(len(record.trials))])
    doc.add(
        Table(
            ["Backbone", "Complete", "Pruned", "Failed", "Running", "Trials"],
            rows,
            caption="Trials by state.",
            ident="states-table",
        )
    )


def _budget(doc: Document, record: FinishedStudy) -> None:
    """What the search cost: trials, epochs, wall time, VRAM plans."""
    # Budget: epochs and VRAM plans are Optuna user attributes (trials.csv); times from the runs.
    epochs = None
    plans: dict[str, int] = {}
    trials_csv = record.trials_table
    if trials_csv is not None:
        if "user_attrs_epochs_run" in trials_csv.columns:
            epochs = int(pd.to_numeric(trials_csv["user_attrs_epochs_run"], errors="coerce").fillna(0).sum())
        if "user_attrs_budget_action" in trials_csv.columns:
            counts = trials_csv["user_attrs_budget_action"].dropna().astype(str).value_counts()
            plans = {str(k): int(v) for k, v in counts.items()}
    trial_seconds = sum(t.seconds or 0.0 for t in record.trials)
    budget_rows = [
        ["Trials", str(len(record.trials))],
        ["Epochs trained (all trials)", str(epochs) if epochs is not None else "not recorded"],
        ["Wall time of the study", duration(record.seconds)],
        ["Trial runs' time, summed", duration(trial_seconds)],
        [
            "VRAM plans",
            ", ".join(
                f"{plans.get(k, 0)} {label}"
                for k, label in (
                    ("run", "run as sampled"),
                    ("reshape", "reshaped (smaller batch, accumulation)"),
                    ("prune", "pruned before training"),
                )
            )
            if plans
            else "not recorded (no trials.csv)",
        ],
    ]
    doc.add(
        Table(
            ["Budget", "Spent"],
            budget_rows,
            caption="What the search cost.",
            numeric_from=1,
            ident="budget-table",
        )
    )


def _history(doc: Document, record: FinishedStudy, complete: list[tuple[TrialRecord, float]]) -> None:
    """Each completed trial's objective, and the best so far."""
    objective = record.objective or "value"
    points = [(t.number, v, t.backbone or "?") for t, v in complete]
    if points:
        doc.add(
            Figure(
                "optimization_history.png",
                figures.history_png(points, objective=objective, direction=record.direction),
                f"Each completed trial's {objective}, and the best so far ({record.direction}).",
            )
        )


def _importances(doc: Document, record: FinishedStudy, complete: list[tuple[TrialRecord, float]]) -> None:
    """Parameter importances (fANOVA) over all trials and within each backbone."""
    from clot_hpo.search.importance import MIN_TRIALS, param_importances

    # Parameters are named per backbone (``resnet50.learning_rate``): the study's shared ones
    # (the backbone itself) across all trials, each backbone's own across its trials.
    scopes: dict[str, dict[str, float]] = {}
    overall = [({k: v for k, v in t.params.items() if k not in NOT_SEARCHED}, v) for t, v in complete]
    scopes["all trials"] = param_importances(overall, direction=record.direction)
    for backbone in sorted({t.backbone for t, _ in complete if t.backbone}):
        own = [
            (
                {
                    short: v
                    for k, v in t.params.items()
                    if (short := _short(k, backbone)) not in NOT_SEARCHED and k != "backbone"
                },
                value,
            )
            for t, value in complete
            if t.backbone == backbone
        ]
        scopes[backbone] = param_importances(own, direction=record.direction)
    scopes = {k: v for k, v in scopes.items() if v}
    doc.add(Heading("Parameter importances", level=3))
    if scopes:
        names = list(dict.fromkeys(n for imp in scopes.values() for n in imp))
        rows = [[n, *(f"{imp[n]:.3f}" if n in imp else "–" for imp in scopes.values())] for n in names]
        doc.add(
            Table(
                ["Parameter", *scopes],
                rows,
                caption="fANOVA (optuna.importance) over completed trials: the shares of the objective's "
                "variance each parameter explains, within each scope (they add up to 1 per column).",
                ident="importances-table",
            )
        )
        widest = max(scopes, key=lambda k: len(scopes[k]))
        doc.add(
            Figure(
                "param_importances.png",
                figures.importances_png(scopes[widest]),
                f"Hyperparameter importances ({widest}).",
            )
        )
    else:
        doc.add(
            Paragraph(
                f"Not computed: importances need at least {MIN_TRIALS} completed trials whose parameters "
                f"vary (this study has {len(complete)} completed)."
            )
        )


def _best_params(doc: Document, cands: list[Candidate]) -> None:
    """The searched parameters of each backbone's best trial, side by side."""
    doc.add(Heading("Best parameters per backbone", level=3))
    if cands:
        shown = [
            {
                _short(k, c.backbone): v
                for k, v in c.trial.params.items()
                if k not in NOT_SEARCHED and k != "backbone"
            }
            for c in cands
        ]
        names = sorted({k for params in shown for k in params})
        rows = [[n, *(_value(params.get(n, "–")) for params in shown)] for n in names]
        doc.add(
            Table(
                ["Parameter", *(f"{c.backbone} (trial {c.trial.number})" for c in cands)],
                rows,
                numeric_from=1,
                ident="params-table",
            )
        )


def _value(text: str) -> str:
    """A logged parameter as a reader wants it: ``0.000724`` rather than ``0.000724150397721805``."""
    try:
        number = float(text)
    except ValueError:
        return text
    return text if number.is_integer() or len(text) <= 8 else f"{number:.4g}"


def _short(name: str, backbone: str) -> str:
    """A parameter's name without its backbone's prefix (``resnet50.dropout`` -> ``dropout``)."""
    return name[len(backbone) + 1 :] if name.startswith(f"{backbone}.") else name


def _data(doc: Document, record: FinishedStudy, cands: list[Candidate], settings: ExperimentConfig) -> None:
    doc.add(Heading("The data", anchor="data"))
    _data_facts(doc, record)
    _counts(doc, record)
    _leakage(doc, record.data_report)
    _subgroups(doc, record, cands, settings)


def _data_facts(doc: Document, record: FinishedStudy) -> None:
    """Digest, folder, layout and how the split was made."""
    data_report, manifest = record.data_report, record.manifest
    recorded_path = record.config.data.path if record.config is not None else None
    facts = [
        ["Dataset digest (sha256)", f"`{record.digest or data_report.get('digest') or 'not recorded'}`"],
        ["Data folder", str(recorded_path or data_report.get("data_path") or "not recorded")],
        ["Layout", str(data_report.get("layout") or "not recorded")],
    ]
    grouped = data_report.get("grouped")
    if grouped is None and manifest is not None:
        grouped = "group" in manifest.columns
    facts.append(
        [
            "Split",
            ("grouped by " + str(data_report.get("group_column") or "group") + ": no group spans two splits")
            if grouped
            else "not grouped (image by image)",
        ]
    )
    doc.add(Table(["About the data", ""], facts, numeric_from=2, ident="data-facts"))


def _counts(doc: Document, record: FinishedStudy) -> None:
    """Images per class and split: the data report's counts, else the manifest's."""
    data_report, manifest = record.data_report, record.manifest
    classes = data_report.get("classes") or {"1": "positive", "0": "negative"}
    counts = data_report.get("counts")
    if not counts and manifest is not None:
        counts = {
            split: {classes.get(str(k), str(k)): int(v) for k, v in part["label"].value_counts().items()}
            for split, part in manifest.groupby("split")
        }
    if counts:
        names = [classes.get("1", "positive"), classes.get("0", "negative")]
        rows = [
            [split, *(str(counts[split].get(n, 0)) for n in names), str(sum(counts[split].values()))]
            for split in ("train", "val", "test")
            if split in counts
        ]
        doc.add(
            Table(
                ["Split", *names, "Images"], rows, caption="Images per class and split.", ident="counts-table"
            )
        )


def _leakage(doc: Document, data_report: dict[str, Any]) -> None:
    """What the leakage check found, across splits and inside one."""
    leakage = data_report.get("leakage")
    if leakage:
        if leakage.get("has_leakage"):
            pairs = ", ".join(
                f"{k}: {v['exact']} exact, {v['near']} near"
                for k, v in sorted((leakage.get("by_split_pair") or {}).items())
            )
            text = (
                f"**Leakage: {leakage.get('n_exact', 0)} exact and {leakage.get('n_near', 0)} near-duplicate "
                f"pair(s) cross splits** ({pairs}); test figures may be optimistic."
            )
            doc.add(Paragraph(text, kind="note"))
        else:
            doc.add(
                Paragraph(
                    f"Leakage check: no duplicate crosses splits among {leakage.get('n_images', '?')} images "
                    f"(exact, and perceptual hash distance ≤ {leakage.get('max_distance', '?')})."
                )
            )
        if leakage.get("within_split_exact"):
            doc.add(
                Paragraph(f"{leakage['within_split_exact']} exact duplicate pair(s) inside a single split.")
            )
    else:
        doc.add(Paragraph("No data report on the study run: the leakage check is not shown.", kind="note"))


def _subgroups(
    doc: Document, record: FinishedStudy, cands: list[Candidate], settings: ExperimentConfig
) -> None:
    """Each model's test metrics by the metadata CSV's extra columns (site, scanner, age band)."""
    data_report, manifest = record.data_report, record.manifest
    doc.add(Heading("Subgroups", level=3))
    keyed, why = subgroup_columns(
        record.config.data if record.config is not None else None, data_report, manifest
    )
    with_files = [c for c in cands if c.from_files and c.test is not None]
    if keyed is None or not with_files:
        doc.add(Paragraph(f"No subgroup table: {why or 'no predictions files'}."))
        return
    for column in [c for c in keyed.columns if c != "sha256"]:
        rows = []
        for cand in with_files:
            assert cand.test is not None and cand.threshold is not None
            test = cand.test.assign(sha256=cand.test["key"].str.split("#").str[0])
            merged = test.merge(keyed[["sha256", column]].drop_duplicates("sha256"), on="sha256", how="left")
            merged[column] = merged[column].fillna("(not in the metadata)")
            for level, part in merged.groupby(column, sort=True):
                m = binary_metrics(
                    part["label"],
                    part["probability"],
                    threshold=cand.threshold,
                    confidence=settings.evaluation.confidence_level,
                    n_bootstrap=settings.evaluation.bootstrap_samples,
                    seed=settings.seed,
                    prevalence=settings.evaluation.prevalence,
                )
                rows.append(
                    [
                        cand.backbone,
                        str(level),
                        str(len(part)),
                        str(int(part["label"].sum())),
                        *(format_estimate(m, metric.name) for metric in summary_metrics()),
                    ]
                )
        doc.add(
            Table(
                ["Backbone", column, "n", "Clots", *(metric.label for metric in summary_metrics())],
                rows,
                caption=f"Test split by `{column}` (from the metadata CSV), each model at its threshold. "
                "Small subgroups give wide intervals; AUC needs both classes.",
                numeric_from=2,
                ident=f"subgroup-{column}",
            )
        )


__all__ = [
    "ALPHA",
    "Report",
    "build_report",
    "few_positives",
    "verdict",
]
