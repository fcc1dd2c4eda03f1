"""The study report: the evidence a clinical reader needs, from what tracking stored.

``clot-hpo report --experiment NAME`` reads a study from MLflow
(:mod:`clot_hpo.tracking.study_reader`), computes the seed's table with intervals for the best
trial of each backbone, the paired comparison (DeLong, McNemar), calibration, the search and
the data (:mod:`clot_hpo.report.build`), and writes ``report.md`` and a self-contained
``report.html`` (rendered by :mod:`clot_hpo.render`), which it attaches to the study's run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clot_hpo.util import lazy_exports

if TYPE_CHECKING:  # the one list of exports: lazy_exports reads it (util.lazy_exports)
    from clot_hpo.report.build import Report as Report
    from clot_hpo.report.build import build_report as build_report
    from clot_hpo.report.commands import report_command as report_command

__getattr__, __dir__ = lazy_exports(globals())
