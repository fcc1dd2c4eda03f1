"""End to end: the MLflow UI of a real server, in headless Chromium, lists a study's runs.

The link is the one `make mlflow-server` and the demo print (``ui_links``): it must open the
model-training runs table (not MLflow 3's GenAI view), where the collapsed study row already
shows its headline metrics.

Driven by Playwright's Python package against Debian's ``/usr/bin/chromium`` (installed by
``make test`` through ``make system-deps``), so no browser is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clot_hpo.evaluate.catalogue import headline_keys
from clot_hpo.tracking.mlflow_tracker import MlflowTracker
from clot_hpo.tracking.ui_links import experiment_link
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.mlflow_server import MlflowServer, mlflow_server  # noqa: F401  (pytest fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing (Debian package `chromium`; `make system-deps` installs it)",
    ),
]


def test_the_ui_lists_the_study_run_and_its_trial_runs(mlflow_server: MlflowServer, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    tracker = MlflowTracker(mlflow_server.uri, experiment_name="ui-study", tries=2, backoff_s=0.1)
    tracker.check_available()
    # The headline metrics come from the metric catalogue, as the search passes them.
    tracker.start_study("ui-study", objective="val_auc", direction="maximize", headline=headline_keys())
    for number, state in enumerate(("COMPLETE", "PRUNED", "FAIL")):
        run_id = tracker.start_trial(number)
        tracker.log_epoch(run_id, 0, {"val_auc": 0.5 + number / 10})
        if state == "COMPLETE":
            tracker.log_evaluation(
                run_id,
                metrics={
                    "val_auc": 0.8125,
                    "test_auc": 0.75,
                    "test_auc_ci_low": 0.6,
                    "test_auc_ci_high": 0.875,
                },
                artifacts={},
                figures={},
                step=1,  # after epoch 0, as the forwarder logs it
            )
        tracker.end_trial(
            run_id,
            state,
            reason=None if state == "COMPLETE" else f"{state.lower()} on purpose",
            attrs={"value": 0.8125} if state == "COMPLETE" else None,
        )
    tracker.end_study()
    exp_id = tracker.client.get_experiment_by_name("ui-study").experiment_id
    link = experiment_link(mlflow_server.uri, "ui-study", server=mlflow_server.uri)
    assert link == (
        f"{mlflow_server.uri}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
        "&viewStateShareKey=clot-hpo"
    )

    screenshot = tmp_path / "mlflow-ui.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 2000, "height": 900})
            # MLflow 3 opens on its GenAI view by default; the link asks for "Model training".
            # Not "networkidle": the page keeps polling the runs, and on a loaded machine the
            # bundle alone can take a minute; the waits below are for what the test reads.
            page.goto(link, wait_until="load", timeout=120_000)
            try:
                study_row = page.locator("[role=row]", has_text="ui-study").first
                study_row.wait_for(timeout=120_000)
                # Before expanding, the study's row has its best trial's metrics. The grid draws a
                # row in two parts (the pinned run name, the scrolled columns): read both.
                index = study_row.get_attribute("row-index")
                page.locator(f'[role=row][row-index="{index}"]', has_text="0.8125").first.wait_for(
                    timeout=60_000
                )
                collapsed_row = " ".join(page.locator(f'[role=row][row-index="{index}"]').all_inner_texts())
                collapsed = page.inner_text("body")
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
    assert (
        "GenAI" in collapsed and "Traces" in collapsed
    )  # the view switch and the tab, not the GenAI overview
    for column in ("best_val_auc", "best_test_auc", "best_trial", "n_trials_complete", "n_trials_pruned"):
        assert column in collapsed, column
    # best_val_auc, best_test_auc and its interval, best_trial, completed / pruned / failed.
    for value in ("0.8125", "0.75", "0.6", "0.875"):
        assert value in collapsed_row.split(), (value, collapsed_row)
    assert all(f"trial-{n}" in body for n in range(3))
    assert "4 matching runs" in body
    assert screenshot.stat().st_size > 10_000
