"""The report as a list of blocks, rendered to Markdown and to one self-contained HTML file.

Both outputs come from the same blocks, so they say the same thing: Markdown links its
figures as PNG files beside it (``figures/``), HTML embeds them as base64 ``data:`` URIs and
carries its own CSS, so the file opens anywhere without a network or the files beside it.
The HTML is rendered from the Jinja2 template ``templates/report.html.j2`` (and its
``report.css``) with autoescaping on: text reaches the page escaped unless a filter here
escaped it first.
"""

from __future__ import annotations

import base64
import functools
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from markupsafe import Markup

from clot_hpo.util import markdown_table

FIGURES_FOLDER = "figures"


@dataclass
class Heading:
    """A section title (level 1 is the report's title)."""

    text: str
    level: int = 2
    anchor: str = ""


@dataclass
class Paragraph:
    """Plain text; ``**bold**`` is kept in Markdown and becomes ``<strong>`` in HTML."""

    text: str
    kind: str = ""  # "note" (a caveat) or "finding" (a conclusion) are styled in HTML


@dataclass
class Table:
    """Rows of cells under column titles; numeric columns are right-aligned."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric_from: int = 1  # columns from this index on are right-aligned
    ident: str = ""  # the HTML table's id (for tests and links)


@dataclass
class Figure:
    """A PNG figure and what it shows."""

    name: str  # file name under figures/
    png: bytes
    caption: str


Block = Heading | Paragraph | Table | Figure


@dataclass
class Document:
    """A titled list of blocks."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        """Append blocks in order."""
        self.blocks.extend(blocks)

    @property
    def figures(self) -> list[Figure]:
        """Every figure, in order."""
        return [b for b in self.blocks if isinstance(b, Figure)]


def to_markdown(doc: Document) -> str:
    """The report as Markdown, its figures linked as ``figures/<name>``."""
    out = [f"# {doc.title}", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out += ["#" * max(2, block.level) + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            out += [("> " if block.kind == "note" else "") + block.text, ""]
        elif isinstance(block, Table):
            if block.caption:
                out += [f"*{block.caption}*", ""]
            out += [*markdown_table(block.columns, block.rows, numeric_from=block.numeric_from), ""]
        else:
            out += [f"![{block.caption}]({FIGURES_FOLDER}/{block.name})", "", f"*{block.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


_WITH_INTERVAL = re.compile(r"^(\S+) (\(.+–.+\))$")


def _num_cell(text: str) -> str:
    """A number cell; an interval goes under its point estimate, so wide tables still fit."""
    match = _WITH_INTERVAL.match(text)
    if match is None:
        return _inline(text)
    return f'{_inline(match.group(1))} <span class="ci">{_inline(match.group(2))}</span>'


def _inline(text: str) -> str:
    """Escaped text with ``**bold**`` as ``<strong>`` and backticks as ``<code>``."""
    escaped = html.escape(text)
    parts = escaped.split("**")
    escaped = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


@functools.cache
def _templates() -> jinja2.Environment:
    """The report's templates (``report/templates/``), HTML-escaping every value by default."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("clot_hpo.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    # Both escape first and only then add their own tags (see _inline), so their output is safe.
    env.filters["inline"] = lambda text: Markup(_inline(text))
    env.filters["number_cell"] = lambda text: Markup(_num_cell(text))
    env.filters["base64"] = lambda png: base64.b64encode(png).decode("ascii")
    return env


_KINDS = {Heading: "heading", Paragraph: "paragraph", Table: "table", Figure: "figure"}


def to_html(doc: Document) -> str:
    """The report as one HTML file (``report.html.j2``): inline CSS, figures embedded as base64 PNG."""
    blocks = [(_KINDS[type(block)], block) for block in doc.blocks]
    return _templates().get_template("report.html.j2").render(doc=doc, blocks=blocks)


def write_document(doc: Document, folder: Path) -> tuple[Path, Path]:
    """Write ``report.md`` (with ``figures/*.png``) and ``report.html`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    figures = folder / FIGURES_FOLDER
    if doc.figures:
        figures.mkdir(exist_ok=True)
    for figure in doc.figures:
        (figures / figure.name).write_bytes(figure.png)
    md, page = folder / "report.md", folder / "report.html"
    md.write_text(to_markdown(doc), encoding="utf-8")
    page.write_text(to_html(doc), encoding="utf-8")
    return md, page


__all__ = [
    "FIGURES_FOLDER",
    "Block",
    "Document",
    "Figure",
    "Heading",
    "Paragraph",
    "Table",
    "to_html",
    "to_markdown",
    "write_document",
]
