"""A document as a list of blocks, rendered to Markdown and to one self-contained HTML file.

The study report (:mod:`clot_hpo.report.build`) and the model card
(:mod:`clot_hpo.registry.card_document`) are both built as a :class:`Document` and rendered
here, from the Jinja2 templates in ``render/templates/``, so both outputs of both say the same
thing the same way. Markdown links its figures as PNG files beside it (``figures/``); HTML
embeds them as base64 ``data:`` URIs and carries its own CSS, so the file opens anywhere
without a network or the files beside it.

Text is escaped on the way out, whoever wrote it: the HTML template autoescapes every value,
the Markdown template passes every value through :func:`~clot_hpo.render.markdown.escape_markdown`
(its ``finalize``). In both, ``**bold**`` and ```code``` are the only marks a block's text
carries.
"""

from __future__ import annotations

import base64
import functools
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clot_hpo.render.markdown import BOLD, CODE, escape_markdown, markdown_table, split_paired

if TYPE_CHECKING:
    import jinja2

FIGURES_FOLDER = "figures"


@dataclass
class Heading:
    """A section title (level 1 is the document's title)."""

    text: str
    level: int = 2
    anchor: str = ""


@dataclass
class Paragraph:
    """Plain text; ``**bold**`` is kept in Markdown and becomes ``<strong>`` in HTML."""

    text: str
    kind: str = ""  # "note" (a caveat) or "finding" (a conclusion) are styled in HTML


@dataclass
class Bullets:
    """A list of facts, one line each."""

    items: list[str]


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


Block = Heading | Paragraph | Bullets | Table | Figure


@dataclass
class Document:
    """A list of blocks under a title (none: the document starts with its first block)."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        """Append blocks in order."""
        self.blocks.extend(blocks)

    @property
    def figures(self) -> list[Figure]:
        """Every figure, in order."""
        return [b for b in self.blocks if isinstance(b, Figure)]


class _Written(str):
    """Markdown the renderer wrote itself (a table's lines): the template's escape lets it through."""


def _md_value(value: Any) -> str:
    """Every value the Markdown template prints: escaped unless the renderer wrote it."""
    return value if isinstance(value, _Written) else escape_markdown(str(value))


def _md_table(table: Table) -> _Written:
    return _Written("\n".join(markdown_table(table.columns, table.rows, numeric_from=table.numeric_from)))


_WITH_INTERVAL = re.compile(r"^(\S+) (\(.+–.+\))$")


def _num_cell(text: str) -> str:
    """A number cell; an interval goes under its point estimate, so wide tables still fit."""
    match = _WITH_INTERVAL.match(text)
    if match is None:
        return _inline(text)
    return f'{_inline(match.group(1))} <span class="ci">{_inline(match.group(2))}</span>'


def _inline(text: str) -> str:
    """Escaped text with ``**bold**`` as ``<strong>`` and backticks as ``<code>`` (an unpaired mark stays)."""
    parts = split_paired(html.escape(text), BOLD)
    escaped = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = split_paired(escaped, CODE)
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _environment(**options: Any) -> jinja2.Environment:
    import jinja2  # here: the evaluation's Markdown table (render.markdown) needs no Jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("clot_hpo.render", "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        **options,
    )


@functools.cache
def _html_templates() -> jinja2.Environment:
    """The HTML template, HTML-escaping every value by default."""
    from markupsafe import Markup

    env = _environment(autoescape=True)
    # Both escape first and only then add their own tags (see _inline), so their output is safe.
    env.filters["inline"] = lambda text: Markup(_inline(text))
    env.filters["number_cell"] = lambda text: Markup(_num_cell(text))
    env.filters["base64"] = lambda png: base64.b64encode(png).decode("ascii")
    return env


@functools.cache
def _markdown_templates() -> jinja2.Environment:
    """The Markdown template, passing every value through escape_markdown (Jinja2's ``finalize``)."""
    env = _environment(autoescape=False, finalize=_md_value)
    env.filters["table"] = _md_table
    return env


_KINDS = {Heading: "heading", Paragraph: "paragraph", Bullets: "bullets", Table: "table", Figure: "figure"}


def _blocks(doc: Document) -> list[tuple[str, Block]]:
    return [(_KINDS[type(block)], block) for block in doc.blocks]


def to_markdown(doc: Document) -> str:
    """The document as Markdown (``document.md.j2``), its figures linked as ``figures/<name>``."""
    template = _markdown_templates().get_template("document.md.j2")
    text = template.render(doc=doc, blocks=_blocks(doc), folder=FIGURES_FOLDER)
    return text.rstrip() + "\n"


def to_html(doc: Document) -> str:
    """The document as one HTML file (``document.html.j2``): inline CSS, figures embedded as base64 PNG."""
    return _html_templates().get_template("document.html.j2").render(doc=doc, blocks=_blocks(doc))


def write_document(doc: Document, folder: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.md`` (with ``figures/*.png``) and ``<stem>.html`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    figures = folder / FIGURES_FOLDER
    if doc.figures:
        figures.mkdir(exist_ok=True)
    for figure in doc.figures:
        (figures / figure.name).write_bytes(figure.png)
    md, page = folder / f"{stem}.md", folder / f"{stem}.html"
    md.write_text(to_markdown(doc), encoding="utf-8")
    page.write_text(to_html(doc), encoding="utf-8")
    return md, page


__all__ = [
    "FIGURES_FOLDER",
    "Block",
    "Bullets",
    "Document",
    "Figure",
    "Heading",
    "Paragraph",
    "Table",
    "to_html",
    "to_markdown",
    "write_document",
]
