"""One renderer for what clot-hpo writes for people: the study report and the model card.

A :class:`~clot_hpo.render.document.Document` (headings, paragraphs, lists, tables, figures)
is rendered to Markdown and to self-contained HTML from the Jinja2 templates in
``render/templates/`` (:mod:`clot_hpo.render.document`); :mod:`clot_hpo.render.markdown`
holds the one escape of text for Markdown and the one Markdown table writer. It sits just
above ``util`` in the layers, below everything that writes a document, and loads no ML
framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clot_hpo.util import lazy_exports

if TYPE_CHECKING:  # the one list of exports: lazy_exports reads it (util.lazy_exports)
    from clot_hpo.render.document import Bullets as Bullets
    from clot_hpo.render.document import Document as Document
    from clot_hpo.render.document import Figure as Figure
    from clot_hpo.render.document import Heading as Heading
    from clot_hpo.render.document import Paragraph as Paragraph
    from clot_hpo.render.document import Table as Table
    from clot_hpo.render.document import to_html as to_html
    from clot_hpo.render.document import to_markdown as to_markdown
    from clot_hpo.render.document import write_document as write_document
    from clot_hpo.render.markdown import escape_markdown as escape_markdown
    from clot_hpo.render.markdown import markdown_table as markdown_table

__getattr__, __dir__ = lazy_exports(globals())
