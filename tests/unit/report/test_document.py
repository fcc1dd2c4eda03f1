"""The report's HTML comes from a Jinja2 template with autoescaping (issue 21 item 3)."""

from __future__ import annotations

from clot_hpo.report.document import Document, Figure, Heading, Paragraph, Table, to_html


def _doc(text: str) -> Document:
    doc = Document(f"Study report: {text}")
    doc.add(
        Heading(text, anchor="x"),
        Paragraph(f"{text} **bold** `code`", kind="note"),
        Table(["Backbone", "AUC"], [[text, "0.912 (0.871–0.941)"]], caption=text, ident="t"),
        Figure("f.png", b"\x89PNG", text),
    )
    return doc


def test_text_reaches_the_page_escaped_everywhere() -> None:
    page = to_html(_doc('<script>alert("x")</script>'))
    assert "<script>" not in page
    # Title, heading, paragraph, cell, caption, alt text and figure caption: each escaped.
    assert page.count("&lt;script&gt;") == 8


def test_markup_of_our_own_and_the_interval_under_its_estimate() -> None:
    page = to_html(_doc("resnet50"))
    assert '<p class="note">resnet50 <strong>bold</strong> <code>code</code></p>' in page
    assert '<td class="num">0.912 <span class="ci">(0.871–0.941)</span></td>' in page
    assert '<table id="t">' in page and 'src="data:image/png;base64,iVBORw==' in page
    assert page.startswith("<!doctype html>") and page.endswith("</main></body></html>\n")
    assert "font-variant-numeric: tabular-nums" in page  # the CSS file is inlined
