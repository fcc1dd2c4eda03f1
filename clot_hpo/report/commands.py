"""``clot-hpo report``: a study's evidence as ``report.md`` and a self-contained ``report.html``."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from clot_hpo.util import AddCommand

DEFAULT_OUT = Path("mlruns") / "reports"


def report_command(args: argparse.Namespace) -> int:
    """Read the study from MLflow, write the report, attach it to the study run, say where it is."""
    # Imported here: cli.py imports this module for its parser, and --help need not load MLflow.
    from clot_hpo.render.document import write_document
    from clot_hpo.report.build import build_report
    from clot_hpo.tracking.study_reader import log_report, read_study

    out = Path(args.out) if args.out else DEFAULT_OUT / args.experiment
    with tempfile.TemporaryDirectory(prefix="clot-hpo-report-") as tmp:
        record = read_study(args.tracking_uri, args.experiment, folder=Path(tmp))
        report = build_report(record)
        if out.exists():  # a rerun replaces the report and its figures, nothing else
            for old in ("report.md", "report.html"):
                (out / old).unlink(missing_ok=True)
            shutil.rmtree(out / "figures", ignore_errors=True)
        md, page = write_document(report.document, out, "report")
        logged = log_report(record, [md, page])
    print(
        f"report of study {record.study!r} ({len(record.trials)} trials, "
        f"{len(report.candidates)} backbone(s) compared):"
    )
    print(f"  {page.resolve()}")
    print(f"  {md.resolve()}")
    print(f"  attached to the study run: {logged}")
    for note in report.notes:
        print(f"  note: {note}")
    return 0


def add_commands(add: AddCommand) -> None:
    """Declare ``report`` to the command line."""
    p = add("report", report_command, "a study's report: results with intervals, paired tests, calibration")
    p.add_argument("--experiment", required=True, help="MLflow experiment (the study name)")
    p.add_argument("--tracking-uri", help="default: sqlite:///mlruns/mlflow.db")
    p.add_argument("--out", help="folder for report.md and report.html (default: mlruns/reports/EXPERIMENT)")


__all__ = ["DEFAULT_OUT", "add_commands", "report_command"]
