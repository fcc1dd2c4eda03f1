"""End to end: the MLflow UI of a real server, in headless Chromium, lists a study's runs.

Driven by Playwright's Python package against Debian's ``/usr/bin/chromium`` (installed by
``make test`` through ``make system-deps``), so no browser is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clot_hpo.tracking.mlflow_tracker import MlflowTracker
from tests.support.mlflow_server import MlflowServer, mlflow_server  # noqa: F401  (pytest fixture)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (Debian package `chromium`; "
                                                     "`make system-deps` installs it)"),
]


def test_the_ui_lists_the_study_run_and_its_trial_runs(mlflow_server: MlflowServer, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    tracker = MlflowTracker(mlflow_server.uri, experiment_name="ui-study", tries=2, backoff_s=0.1)
    tracker.check_available()
    tracker.start_study("ui-study")
    for number, state in enumerate(("COMPLETE", "PRUNED", "FAIL")):
        run_id = tracker.start_trial(number)
        tracker.log_epoch(run_id, 0, {"val_auc": 0.5 + number / 10})
        tracker.end_trial(run_id, state, reason=None if state == "COMPLETE" else f"{state.lower()} on purpose")
    tracker.end_study()
    exp_id = tracker.client.get_experiment_by_name("ui-study").experiment_id

    screenshot = tmp_path / "mlflow-ui.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            # MLflow 3 opens on its GenAI view by default; the runs table is "Model training".
            page.goto(f"{mlflow_server.uri}/#/experiments/{exp_id}/runs?workflowType=machine_learning",
                      wait_until="networkidle", timeout=60_000)
            try:
                study_row = page.locator("[role=row]", has_text="ui-study").first
                study_row.wait_for(timeout=30_000)
                # Trial runs are nested under the study run: expand it.
                study_row.locator('[col-id*="Run Name"] button').first.click()
                for number in range(3):
                    page.get_by_text(f"trial-{number}", exact=True).first.wait_for(timeout=30_000)
            finally:
                page.screenshot(path=str(screenshot), full_page=True)
            body = page.inner_text("body")
        finally:
            browser.close()
    assert "ui-study" in body
    assert all(f"trial-{n}" in body for n in range(3))
    assert "4 matching runs" in body
    assert screenshot.stat().st_size > 10_000
