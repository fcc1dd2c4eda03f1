"""The model card as a document: ``model_card.md`` and the version's description, for people.

The card's facts (:func:`clot_hpo.registry.card.build_card`, saved as ``model_card.json``) are
laid out here as a :class:`~clot_hpo.render.document.Document` and rendered by the renderer the
study report uses (:mod:`clot_hpo.render`), so whatever a study's files and runs say (a
dataset's path, a gate's reason, a hyperparameter's value) reaches the card escaped: it
cannot split a table's row nor become a link or HTML.
"""

from __future__ import annotations

from typing import Any

from clot_hpo.evaluate.catalogue import (
    CI_HIGH,
    CI_LOW,
    format_estimate,
    format_interval,
    format_number,
    get_metric,
    summary_metrics,
)
from clot_hpo.registry.card import CARD_JSON, CARD_MD
from clot_hpo.render.document import Block, Bullets, Document, Heading, Paragraph, Table, to_markdown
from clot_hpo.tracking.tags import (
    TAG_GATE_CHAMPION,
    TAG_GATE_DECISION,
    TAG_GATE_METRIC,
    TAG_GATE_REASON,
    TAG_GATE_RULE,
)


def _fmt(value: Any) -> str:
    """A fact as text: floats to 4 significant digits, dicts and lists on one line."""
    if value is None or value == "":
        return "not recorded"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) or "not recorded"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "not recorded"
    return str(value)


def _estimate(rows: dict[str, dict[str, float | None]], name: str) -> str:
    """``0.912 (0.871–0.941)`` for a card's metric row (the catalogue's one format)."""
    row = rows.get(name) or {}
    return format_estimate(
        {name: row.get("value"), name + CI_LOW: row.get("ci_low"), name + CI_HIGH: row.get("ci_high")}, name
    )


def _metrics_table(rows: dict[str, dict[str, float | None]]) -> Block:
    """The catalogue's metrics on one split: label, value, interval (or "not recorded")."""
    if not rows:
        return Paragraph("not recorded")
    body = []
    for name, row in rows.items():
        metric = get_metric(name)
        value = format_number(row["value"], metric.digits)
        interval = format_interval(row.get("ci_low"), row.get("ci_high"), metric.digits)
        body.append([metric.label, value, interval])
    return Table(["metric", "value", "interval"], body)


def _promotion(decision: dict[str, str]) -> list[str]:
    if not decision:
        return ["not decided"]
    compared = decision.get(TAG_GATE_CHAMPION, "none")
    against = f"against version {compared}" if compared != "none" else "with no champion before it"
    return [
        f"Decision: **{decision.get(TAG_GATE_DECISION)}** {against} "
        f"(rule: {decision.get(TAG_GATE_RULE)}; metric {decision.get(TAG_GATE_METRIC)})",
        f"{decision.get(TAG_GATE_REASON)}",
    ]


def _model_details(details: dict[str, Any]) -> list[str]:
    inp = details["input"]
    return [
        f"Backbone: {_fmt(details.get('backbone'))}; weights used: {_fmt(details.get('weights_used'))}",
        f"Input: {_fmt(inp.get('image_size'))} x {_fmt(inp.get('image_size'))} x 3, {inp['range']}",
        f"Parameters: {_fmt(details.get('parameters'))} (stored weights, trainable and not)",
        f"Model file sha256: `{_fmt(details.get('model_file_sha256'))}`",
        f"Code: git commit {_fmt(details['code']['git_commit'])}; card written by clot-hpo "
        f"{details['code']['clot_hpo_version_at_promotion']}",
        f"Environment (pinned with the model): {_fmt(details.get('environment'))}",
        f"Hyperparameters: {_fmt(details.get('hyperparameters'))}",
    ]


def _data(data: dict[str, Any], evaluation: dict[str, Any]) -> list[Block]:
    """The training data's and the evaluation data's sections."""
    return [
        Heading("Training data"),
        Bullets(
            [
                f"Dataset digest: `{_fmt(data.get('dataset_digest'))}`; "
                f"source: {_fmt(data.get('source_path'))}"
                + (" (synthetic)" if data.get("synthetic") else ""),
                f"Images per split: {_fmt(data.get('counts'))}",
                f"Split: {_fmt(data.get('split'))}; "
                f"patients/groups kept together: {_fmt(data.get('grouped'))}"
                + (f" ({data['n_groups']} groups)" if data.get("n_groups") else ""),
                f"Leakage report: {_fmt(data.get('leakage'))}",
            ]
        ),
        Heading("Evaluation data"),
        Bullets(
            [
                evaluation["split"],
                f"{_fmt(evaluation.get('n_images'))} images ({_fmt(evaluation.get('positive'))} positive, "
                f"{_fmt(evaluation.get('negative'))} negative); predictions: {evaluation['predictions']}",
            ]
        ),
    ]


def _use_of_the_model(card: dict[str, Any]) -> list[Block]:
    """Calibration, the decision threshold and how the trial trained."""
    calibration, threshold, training = card["calibration"], card["threshold"], card["training"]
    target = threshold.get("target_sensitivity")
    return [
        Heading("Calibration"),
        Bullets(
            [
                f"ECE (10 bins): {_fmt(calibration.get('ece'))}; "
                f"Brier score: {_fmt(calibration.get('brier'))} (from {_fmt(calibration.get('source'))})"
            ]
        ),
        Heading("Decision threshold"),
        Bullets(
            [
                f"{_fmt(threshold.get('value'))}, chosen on the {threshold['chosen_on']} "
                f"by {_fmt(threshold.get('method'))}"
                + (f" (target sensitivity {target})" if target else "")
                + "; an image is called a clot when its probability is at least the threshold"
            ]
        ),
        Heading("Training"),
        Bullets(
            [
                f"Epochs: {_fmt(training.get('epochs'))} planned, {_fmt(training.get('epochs_run'))} run; "
                f"batch {_fmt(training.get('batch_size'))} x {_fmt(training.get('accumulation_steps'))} "
                f"accumulation; mixed precision {_fmt(training.get('mixed_precision'))}",
                f"VRAM plan: {_fmt(training.get('vram_plan'))}",
                f"Time (s): {_fmt(training.get('time_s'))}",
            ]
        ),
    ]


def card_document(card: dict[str, Any]) -> Document:
    """``model_card.md``'s document: every section of the card (after Mitchell et al. 2019)."""
    details, use, metrics = card["model_details"], card["intended_use"], card["metrics"]
    doc = Document(f"Model card: {details['name']} version {details['version']}")
    doc.add(
        Paragraph(
            f"Trial {details.get('trial')} of study {details.get('study')} (run `{details['run_id']}`)."
        ),
        Heading("Model details"),
        Bullets(_model_details(details)),
        Heading("Intended use"),
        Bullets([use["primary"]]),
        Paragraph("Out of scope:"),
        Bullets(list(use["out_of_scope"])),
        *_data(card["training_data"], card["evaluation_data"]),
        Heading("Metrics (test)"),
        Paragraph(metrics["intervals"]),
        _metrics_table(metrics["test"]),
        Paragraph("Validation:"),
        _metrics_table(metrics["validation"]),
        *_use_of_the_model(card),
        Heading("Promotion"),
        Bullets(_promotion(card.get("promotion") or {})),
        Heading("Caveats"),
        Bullets(list(card["caveats"])),
    )
    return doc


def summary_document(card: dict[str, Any]) -> Document:
    """The version's description: the card's essentials, for the MLflow registry page (no title)."""
    details, data, evaluation = card["model_details"], card["training_data"], card["evaluation_data"]
    calibration, threshold = card["calibration"], card["threshold"]
    test = card["metrics"]["test"]
    decision = card.get("promotion") or {}
    rows = [
        *([m.label, _estimate(test, m.name)] for m in summary_metrics()),
        ["ECE / Brier", f"{_fmt(calibration.get('ece'))} / {_fmt(calibration.get('brier'))}"],
        ["threshold", f"{_fmt(threshold.get('value'))} ({_fmt(threshold.get('method'))}, on validation)"],
    ]
    doc = Document("")
    doc.add(
        Paragraph(
            f"**{_fmt(details.get('backbone'))}**, {_fmt(details['input'].get('image_size'))} px, weights "
            f"{_fmt(details.get('weights_used'))}, {_fmt(details.get('parameters'))} parameters; "
            f"trial {details.get('trial')} of study {details.get('study')}."
        ),
        Paragraph(
            f"Research tool, not a diagnostic device. Data: digest `{str(data.get('dataset_digest'))[:12]}`, "
            f"source {_fmt(data.get('source_path'))}"
            + (" (synthetic)" if data.get("synthetic") else "")
            + "."
        ),
        Table([f"test (n={_fmt(evaluation.get('n_images'))})", "value (interval)"], rows),
        Paragraph(
            f"Promotion: **{decision.get(TAG_GATE_DECISION, 'not decided')}**: "
            f"{decision.get(TAG_GATE_REASON, '')}"
        ),
        Paragraph("Caveats:"),
        Bullets(list(card["caveats"])),
        Paragraph(f"Full card: artifacts `{CARD_MD}` and `{CARD_JSON}` of run {details['run_id']}."),
    )
    return doc


def render_markdown(card: dict[str, Any]) -> str:
    """``model_card.md``: the card's document as Markdown."""
    return to_markdown(card_document(card))


def summary_markdown(card: dict[str, Any]) -> str:
    """The version's description: the summary's document as Markdown."""
    return to_markdown(summary_document(card))


__all__ = ["card_document", "render_markdown", "summary_document", "summary_markdown"]
