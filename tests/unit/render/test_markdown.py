"""The one escape of text for Markdown: quoted text can neither split a table's row nor act as a link or HTML.

Each check renders the Markdown with markdown-it-py (CommonMark with GitHub's tables, raw HTML
and any link target allowed, as the most permissive viewer would) and asserts what it builds.
"""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from clot_hpo.render.document import Bullets, Document, Heading, Paragraph, Table, to_markdown
from clot_hpo.render.markdown import escape_markdown, markdown_table

HOSTILE = [
    "north|south",
    '<script>alert("x")</script>',
    "[click](javascript:alert(1))",
    "![x](http://evil.example/p.png)",
    "[x][ref] and [ref]: javascript:alert(1)",
    "<javascript:alert(1)> and <!-- hidden -->",
    "a\\|b and a\\](javascript:alert(1))",
    "two\nlines\r\n# heading\n<div>block</div>",
    "a `code|x` then `unpaired [x](javascript:alert(1))",
    "ends with a backslash\\",
]


def _viewer(markdown: str) -> str:
    viewer = MarkdownIt("commonmark", {"html": True}).enable("table")
    # markdown-it drops javascript: links itself; a viewer that does not must be safe too.
    viewer.validateLink = lambda url: True
    return viewer.render(markdown)


def _document(text: str) -> Document:
    doc = Document(f"Card {text}")
    doc.add(
        Heading(text),
        Paragraph(f"source: {text} (**bold**)"),
        Bullets([text, f"reason: {text}"]),
        Table(["dataset", "value"], [[text, "0.9"], ["plain", text]], caption=text),
    )
    return doc


@pytest.mark.parametrize("text", HOSTILE)
def test_quoted_text_cannot_split_a_row_nor_link_nor_inject_html(text: str) -> None:
    page = _viewer(to_markdown(_document(text)))
    assert "<a " not in page and "<img" not in page
    assert "<script" not in page and "<div" not in page and "<!--" not in page
    rows = page.split("<tr>")[1:]
    assert len(rows) == 3 and all(row.count("<td") + row.count("<th") == 2 for row in rows), page
    assert page.count("<table>") == 1 and page.count("<h1>") == 1 and page.count("<h2>") == 1
    assert page.count("<li>") == 2, "one list item per fact, whatever it quotes"


def test_the_text_reads_as_written() -> None:
    """The escapes are invisible once rendered, and ordinary text is not escaped at all."""
    text = "x|y [a](javascript:b) <b>c</b> d\\e"
    page = _viewer(to_markdown(_document(text)))
    assert "x|y [a](javascript:b) &lt;b&gt;c&lt;/b&gt; d\\e" in page
    ordinary = r"raw RGB pixels in [0, 255]; p < 0.05; C:\data\scans; a_b *c*; [1] see"
    assert escape_markdown(ordinary) == ordinary


def test_our_marks_stay_and_a_table_cell_escapes_pipes_in_code() -> None:
    assert escape_markdown("**bold** `a|b`") == "**bold** `a|b`"
    assert escape_markdown("**bold** `a|b`", table=True) == "**bold** `a\\|b`"
    page = _viewer("\n".join(markdown_table(["a"], [["**b** `c|d`"]])))
    assert "<td><strong>b</strong> <code>c|d</code></td>" in page
    # An unpaired backtick is a backtick: what follows it is escaped like any text.
    assert escape_markdown("`x [a](y)") == "\\`x [a\\](y)"


def test_markdown_table_escapes_cells_and_right_aligns_numbers() -> None:
    lines = markdown_table(["name", "value"], [["a|b", "1\n2"]], numeric_from=1)
    assert lines == ["| name | value |", "|---|---:|", "| a\\|b | 1 2 |"]
    assert markdown_table(["x"], [])[1] == "|---|"
