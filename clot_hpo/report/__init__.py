"""The study report: the evidence a clinical reader needs, from what tracking stored.

``clot-hpo report --experiment NAME`` reads a study from MLflow
(:mod:`clot_hpo.tracking.study_reader`), computes the seed's table with intervals for the best
trial of each backbone, the paired comparison (DeLong, McNemar), calibration, the search and
the data (:mod:`clot_hpo.report.build`), and writes ``report.md`` and a self-contained
``report.html`` (:mod:`clot_hpo.report.document`), which it attaches to the study's run.
"""

from __future__ import annotations

from clot_hpo.report.build import Report, build_report
from clot_hpo.report.commands import report_command
from clot_hpo.report.document import Document, to_html, to_markdown, write_document

__all__ = [
    "Document",
    "Report",
    "build_report",
    "report_command",
    "to_html",
    "to_markdown",
    "write_document",
]
