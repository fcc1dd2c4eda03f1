"""The model card is a document rendered by the report's renderer: what a study quotes reaches it escaped.

The card's facts come from :func:`~clot_hpo.registry.card.build_card` on a run object shaped as
MLflow's (no store needed); hostile text stands in a dataset's path, a hyperparameter, the
threshold rule and the gate's reason, as a study's files and runs could hold them.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from markdown_it import MarkdownIt

from clot_hpo.registry.card import build_card
from clot_hpo.registry.card_document import card_document, render_markdown, summary_markdown
from clot_hpo.render import document as render_document
from clot_hpo.render.document import Bullets, Table, to_html

HOSTILE = "north|south <script>alert(1)</script> [x](javascript:alert(1))\nnext"


def _card(hostile: str = "") -> dict[str, Any]:
    metrics = {"threshold": 0.5, "test_ece": 0.04, "test_brier": 0.1}
    for name, value in (("auc", 0.91), ("sensitivity", 0.8), ("ppv", 0.7)):
        metrics |= {
            f"test_{name}": value,
            f"test_{name}_ci_low": value - 0.1,
            f"test_{name}_ci_high": value + 0.05,
        }
    metrics |= {"val_auc": 0.93, "val_auc_ci_low": 0.88, "val_auc_ci_high": 0.97}
    run = SimpleNamespace(
        info=SimpleNamespace(run_id="run-1"),
        data=SimpleNamespace(
            params={"backbone": "tiny_cnn", "image_size": "32", "learning_rate": "0.01" + hostile},
            tags={"clot_hpo.study": "study-a", "optuna.trial_number": "4"},
            metrics=metrics,
        ),
    )
    card = build_card(
        model_name="clots",
        version="2",
        run=run,
        model_id="m-1",
        study=None,
        trial_attrs={"weights_used": "imagenet"},
        model_sha256="ab" * 32,
        parameter_count=1234,
        requirements=["keras==3.12.0"],
        test_predictions=None,
        decision={
            "promotion.decision": "promoted",
            "promotion.compared_with": "1",
            "promotion.reason": "AUC higher by 0.05" + hostile,
            "promotion.rule": "min delta 0",
            "promotion.metric": "auc",
        },
        dataset_digest="0123456789abcdef",
    )
    card["training_data"]["source_path"] = "/data/clots" + hostile  # the dataset's name, as recorded
    card["threshold"]["method"] = "youden" + hostile  # a cell of the summary's table
    return card


def _viewer(markdown: str) -> str:
    viewer = MarkdownIt("commonmark", {"html": True}).enable("table")
    viewer.validateLink = lambda url: True  # the most permissive viewer
    return viewer.render(markdown)


def test_every_fact_of_the_card_shows_in_its_sections() -> None:
    card = _card()
    text = render_markdown(card)
    assert text.startswith("# Model card: clots version 2\n\nTrial 4 of study study-a (run `run-1`).")
    for section in ("Model details", "Intended use", "Training data", "Evaluation data", "Metrics (test)"):
        assert f"\n## {section}\n" in text
    for section in ("Calibration", "Decision threshold", "Training", "Promotion", "Caveats"):
        assert f"\n## {section}\n" in text
    assert "| AUC | 0.910 | 0.810–0.960 |" in text and "| AUC | 0.930 | 0.880–0.970 |" in text
    assert "| PPV | 0.700 | 0.600–0.750 |" in text
    assert f"- Model file sha256: `{'ab' * 32}`" in text
    assert "- Hyperparameters: backbone tiny_cnn, image_size 32, learning_rate 0.01" in text
    assert "raw RGB pixels in [0, 255]" in text, "ordinary text is not escaped"
    assert "- Decision: **promoted** against version 1 (rule: min delta 0; metric auc)" in text
    assert (
        "not a medical device" in text
        and "- ECE (10 bins): 0.04; Brier score: 0.1 (from run metrics)" in text
    )
    assert all(f"- {caveat}" in text for caveat in card["caveats"])
    summary = summary_markdown(card)
    assert summary.startswith(
        "**tiny_cnn**, 32 px, weights imagenet, 1234 parameters; trial 4 of study study-a."
    )
    assert (
        "| AUC | 0.910 (0.810–0.960) |" in summary
        and "| threshold | 0.5 (youden, on validation) |" in summary
    )
    assert "Promotion: **promoted**: AUC higher by 0.05" in summary
    assert "Full card: artifacts `model_card.md` and `model_card.json` of run run-1." in summary


def test_hostile_facts_cannot_break_the_cards_tables_nor_link_nor_inject_html() -> None:
    card = _card(HOSTILE)
    for markdown in (render_markdown(card), summary_markdown(card)):
        page = _viewer(markdown)
        assert "<a " not in page and "<script" not in page, page
        for table in page.split("<table>")[1:]:
            rows = table.split("</table>")[0].split("<tr>")[1:]
            widths = {row.count("<td") + row.count("<th") for row in rows}
            assert len(widths) == 1, f"a row split: {table}"
        assert "north|south &lt;script&gt;alert(1)&lt;/script&gt; [x](javascript:alert(1)) next" in page
    html = to_html(card_document(card))
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<a " not in html


def test_the_card_and_the_report_share_one_renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The card's Markdown comes from the renderer's template, as the report's does."""
    rendered: list[str] = []
    templates = render_document._markdown_templates()

    class Spy:
        def get_template(self, name: str) -> Any:
            rendered.append(name)
            return templates.get_template(name)

    monkeypatch.setattr(render_document, "_markdown_templates", lambda: Spy())
    card = _card()
    render_markdown(card)
    summary_markdown(card)
    assert rendered == ["document.md.j2", "document.md.j2"]
    doc = card_document(card)
    assert sum(isinstance(b, Table) for b in doc.blocks) == 2 and any(
        isinstance(b, Bullets) for b in doc.blocks
    )
