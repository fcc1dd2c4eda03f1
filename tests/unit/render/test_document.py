"""Documents (the report, the model card) become HTML and Markdown through Jinja2 templates."""

from __future__ import annotations

from clot_hpo.render.document import (
    Bullets,
    Document,
    Figure,
    Heading,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)


def _doc(text: str) -> Document:
    doc = Document(f"Study report: {text}")
    doc.add(
        Heading(text, anchor="x"),
        Paragraph(f"{text} **bold** `code`", kind="note"),
        Bullets([text]),
        Table(["Backbone", "AUC"], [[text, "0.912 (0.871–0.941)"]], caption=text, ident="t"),
        Figure("f.png", b"\x89PNG", text),
    )
    return doc


def test_text_reaches_the_page_escaped_everywhere() -> None:
    page = to_html(_doc('<script>alert("x")</script>'))
    assert "<script>" not in page
    # Title, heading, paragraph, list item, cell, caption, alt text and figure caption: each escaped.
    assert page.count("&lt;script&gt;") == 9


def test_markup_of_our_own_and_the_interval_under_its_estimate() -> None:
    page = to_html(_doc("resnet50"))
    assert '<p class="note">resnet50 <strong>bold</strong> <code>code</code></p>' in page
    assert '<td class="num">0.912 <span class="ci">(0.871–0.941)</span></td>' in page
    assert '<table id="t">' in page and 'src="data:image/png;base64,iVBORw==' in page
    assert page.startswith("<!doctype html>") and page.endswith("</main></body></html>\n")
    assert "font-variant-numeric: tabular-nums" in page  # the CSS file is inlined


def test_markdown_from_its_template_block_by_block() -> None:
    assert to_markdown(_doc("resnet50")) == (
        "# Study report: resnet50\n\n"
        "## resnet50\n\n"
        "> resnet50 **bold** `code`\n\n"
        "- resnet50\n\n"
        "*resnet50*\n\n"
        "| Backbone | AUC |\n|---|---:|\n| resnet50 | 0.912 (0.871–0.941) |\n\n"
        "![resnet50](figures/f.png)\n\n*resnet50*\n"
    )


def test_a_document_without_a_title_starts_with_its_first_block() -> None:
    doc = Document("")
    doc.add(Paragraph("**first**"), Bullets(["a", "b"]))
    assert to_markdown(doc) == "**first**\n\n- a\n- b\n"
    page = to_html(doc)
    assert "<h1>" not in page and "<ul><li>a</li><li>b</li></ul>" in page
