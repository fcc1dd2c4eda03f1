r"""Markdown written safely: the one escape of text for Markdown, and the one Markdown table writer.

Text in a document (a report's sentence, a card's fact) is plain text with two marks of our
own, ``**bold**`` and ```code```; what it quotes (a dataset's path, a gate's reason, a
hyperparameter's value) comes from files and runs that anyone may have written. In Markdown
such text must neither end its line (a newline starts a heading, a list, an HTML block) nor
split a table's row (``|``) nor become markup that acts: a link or an image
(``[x](javascript:...)``, a reference ``[x][y]`` or its definition ``[x]: url``), an autolink or
raw HTML (``<script>``). :func:`escape_markdown` backslash-escapes just the characters that
would do so (CommonMark 0.31, section 2.4: any ASCII punctuation may be escaped), so that
ordinary text (``[0, 255]``, ``p < 0.05``, ``C:\data``) stays as written in the raw file,
which the page serves as plain text; it keeps the two marks. A line's first characters
(``#``, ``>``, ``-``) and emphasis with ``*`` or ``_`` are left alone: they change how text
looks, they cannot make it act.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

CODE, BOLD = "`", "**"

# Outside code: a backslash before what it could escape (so a quoted one cannot disarm the
# escape after it) or at the end (the template's next character may be a table's `|`); a
# closing bracket that a link, an image, a reference or its definition needs (`](`, `][`,
# `]:`: without it no bracket pair links); a stray backtick; `<` where it opens a tag, an
# autolink or a comment. In a table's cell also every `|`, inside code too (GitHub's tables
# split a row at every unescaped `|` before reading code spans).
_PUNCTUATION = r"!-/:-@\[-`{-~"
_ACTIVE = re.compile(rf"\\(?=[{_PUNCTUATION}]|$)|\](?=[(\[:])|`|<(?=[A-Za-z/!?])")
_ACTIVE_IN_TABLE = re.compile(rf"{_ACTIVE.pattern}|\|")


def split_paired(text: str, mark: str) -> list[str]:
    """``text`` cut at ``mark``: odd items lie between a pair; an unpaired last mark stays as text."""
    parts = text.split(mark)
    if len(parts) % 2 == 0:  # an odd number of marks: the last one has no partner
        parts[-2:] = [parts[-2] + mark + parts[-1]]
    return parts


def escape_markdown(text: str, *, table: bool = False) -> str:
    """``text`` as Markdown that reads as the text: one line, no link, no HTML, ``**``/code kept.

    Args:
        text: plain text, where ``**bold**`` and ```code``` are the only marks.
        table: the text is a table's cell: every ``|`` is escaped, inside code too.
    """
    parts = split_paired(" ".join(str(text).splitlines()), CODE)
    active = _ACTIVE_IN_TABLE if table else _ACTIVE
    for i, part in enumerate(parts):
        if i % 2:  # inside code nothing is markup, but a table still splits its row at `|`
            parts[i] = part.replace("|", "\\|") if table else part
        else:
            parts[i] = active.sub(lambda m: "\\" + m.group(0), part)
    return CODE.join(parts)


def markdown_table(
    columns: Sequence[str], rows: Iterable[Sequence[str]], *, numeric_from: int | None = None
) -> list[str]:
    """A Markdown table's lines (report, card, evaluation), every cell through :func:`escape_markdown`.

    Columns from index ``numeric_from`` on are right-aligned (numbers); None aligns none.
    """

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(escape_markdown(str(c), table=True) for c in cells) + " |"

    right = len(columns) if numeric_from is None else numeric_from
    align = "|" + "|".join("---" if i < right else "---:" for i in range(len(columns))) + "|"
    return [line(columns), align, *(line(row) for row in rows)]


__all__ = ["BOLD", "CODE", "escape_markdown", "markdown_table", "split_paired"]
