"""The report as a list of blocks, rendered to Markdown and to one self-contained HTML file.

Both outputs come from the same blocks, so they say the same thing: Markdown links its
figures as PNG files beside it (``figures/``), HTML embeds them as base64 ``data:`` URIs and
carries its own CSS, so the file opens anywhere without a network or the files beside it.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

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


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


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
            out.append("| " + " | ".join(_md_cell(c) for c in block.columns) + " |")
            align = ["---" if i < block.numeric_from else "---:" for i in range(len(block.columns))]
            out.append("|" + "|".join(align) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("")
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


CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2430; margin: 0;
  background: #f6f7f9; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 4px; } h2 { font-size: 20px; margin-top: 36px;
  border-bottom: 1px solid #d8dde5; padding-bottom: 4px; } h3 { font-size: 16px; margin-top: 24px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13.5px; }
th, td { border: 1px solid #d8dde5; padding: 4px 8px; vertical-align: top; }
th { background: #eef1f5; text-align: left; } td.num { text-align: right; white-space: nowrap;
  font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-style: italic; color: #4a5568; padding: 2px 0; }
p.note { background: #fff8e6; border-left: 4px solid #e0a800; padding: 6px 10px; }
p.finding { background: #eef6ff; border-left: 4px solid #2b6cb0; padding: 6px 10px; }
figure { margin: 12px 0 20px; } figure img { max-width: 100%; border: 1px solid #d8dde5; }
figcaption { font-size: 13px; color: #4a5568; }
span.ci { display: block; font-size: 12px; color: #4a5568; } .wide { overflow-x: auto; }
code { background: #eef1f5; padding: 0 3px; }
"""


def to_html(doc: Document) -> str:
    """The report as one HTML file: inline CSS, figures embedded as base64 PNG."""
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(doc.title)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    for block in doc.blocks:
        if isinstance(block, Heading):
            level = max(2, min(block.level, 4))
            ident = f' id="{html.escape(block.anchor)}"' if block.anchor else ""
            out.append(f"<h{level}{ident}>{_inline(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            cls = f' class="{block.kind}"' if block.kind else ""
            out.append(f"<p{cls}>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            ident = f' id="{html.escape(block.ident)}"' if block.ident else ""
            out.append(f'<div class="wide"><table{ident}>')
            if block.caption:
                out.append(f"<caption>{_inline(block.caption)}</caption>")
            out.append(
                "<thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in block.columns) + "</tr></thead>"
            )
            out.append("<tbody>")
            for row in block.rows:
                cells = "".join(
                    f'<td class="num">{_num_cell(c)}</td>'
                    if i >= block.numeric_from
                    else f"<td>{_inline(c)}</td>"
                    for i, c in enumerate(row)
                )
                out.append(f"<tr>{cells}</tr>")
            out.append("</tbody></table></div>")
        else:
            data = base64.b64encode(block.png).decode("ascii")
            alt = html.escape(block.caption)
            out.append(
                f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
            )
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


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
