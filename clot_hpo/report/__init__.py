"""The study report: the evidence a clinical reader needs, from what tracking stored.

``clot-hpo report --experiment NAME`` reads a study from MLflow
(:mod:`clot_hpo.tracking.study_reader`), computes the seed's table with intervals for the best
trial of each backbone, the paired comparison (DeLong, McNemar), calibration, the search and
the data (:mod:`clot_hpo.report.build`), and writes ``report.md`` and a self-contained
``report.html`` (:mod:`clot_hpo.report.document`), which it attaches to the study's run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clot_hpo.util import lazy_exports

if TYPE_CHECKING:  # the one list of exports: lazy_exports reads it (util.lazy_exports)
    from clot_hpo.report.build import Report as Report
    from clot_hpo.report.build import build_report as build_report
    from clot_hpo.report.commands import report_command as report_command
    from clot_hpo.report.document import Document as Document
    from clot_hpo.report.document import to_html as to_html
    from clot_hpo.report.document import to_markdown as to_markdown
    from clot_hpo.report.document import write_document as write_document

__getattr__, __dir__ = lazy_exports(globals())
