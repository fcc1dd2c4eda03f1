"""End to end: the MLflow UI of a real server, in headless Chromium, shows a study's runs and charts.

The link is the one `make mlflow-server` and the demo print (``ui_links``): it must open the
model-training view (not MLflow 3's GenAI view) on the study's charts, with the trials listed
under the study without a click; the table view of the same link shows the study row's
headline metrics. A pruned trial reads as pruned, with the epoch it stopped at.

Driven by Playwright's Python package against Debian's ``/usr/bin/chromium`` (installed by
``make test`` through ``make system-deps``), so no browser is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

STATES = ("COMPLETE", "PRUNED", "FAIL")
SPACES = {
    "tiny_cnn": {
        "backbone": "tiny_cnn",
        "parameters": {
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        },
    }
}


def _study(uri: str) -> MlflowTracker:
    """A study of three trials as the search records them: complete, pruned after 2 epochs, failed."""
    tracker = MlflowTracker(uri, experiment_name="ui-study", tries=2, backoff_s=0.1)
    tracker.check_available()
    # The headline metrics come from the metric catalogue, as the search passes them.
    tracker.start_study("ui-study", objective="val_auc", direction="maximize", headline=headline_keys())
    tracker.log_study_inputs(config={}, search_spaces=SPACES, manifest_path=None, dataset_digest=None)
    for number, state in enumerate(STATES):
        run_id = tracker.start_trial(number)
        params = {"learning_rate": 10.0 ** -(2 + number), "dropout": 0.1 * number, "epochs": 3}
        tracker.log_params(run_id, {**params, "optimizer": ("adam", "sgd")[number % 2]})
        for epoch in range(2 if state == "PRUNED" else 3):
            tracker.log_epoch(run_id, epoch, {"val_auc": 0.5 + number / 10 + epoch / 20, "val_loss": 0.7})
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
    return tracker


def _lines(page: Any) -> list[str]:
    return [line.strip() for line in page.inner_text("body").splitlines() if line.strip()]


def test_the_ui_lists_the_study_run_and_its_trial_runs(mlflow_server: MlflowServer, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    tracker = _study(mlflow_server.uri)
    exp_id = tracker.client.get_experiment_by_name("ui-study").experiment_id
    link = experiment_link(mlflow_server.uri, "ui-study", server=mlflow_server.uri)
    assert link == (
        f"{mlflow_server.uri}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
        "&viewStateShareKey=clot-hpo&compareRunsMode=CHART"
    )
    names = ["trial-0", "trial-1 (pruned at epoch 2)", "trial-2"]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 2000, "height": 1200})
            # MLflow 3 opens on its GenAI view by default; the link asks for "Model training".
            # Not "networkidle": the page keeps polling the runs, and on a loaded machine the
            # bundle alone can take a minute; the waits below are for what the test reads.
            page.goto(link, wait_until="load", timeout=120_000)
            try:
                # The trials are listed under the study without a click (its group opens expanded).
                for name in names:
                    page.get_by_text(name, exact=True).first.wait_for(timeout=120_000)
                # The study's charts: the objective per epoch for every trial, the parallel
                # coordinates, the headline test metric and its interval bounds.
                page.get_by_text("trial-1 (pruned at epoch 2) (val_auc)", exact=True).wait_for(timeout=60_000)
                for title in ("Parallel Coordinates", "test_auc", "test_auc_ci_low", "test_auc_ci_high"):
                    page.get_by_text(title, exact=True).first.wait_for(timeout=60_000)
                page.get_by_text("optimizer", exact=True).first.wait_for(timeout=60_000)
                charts = _lines(page)
            finally:
                page.screenshot(path=str(tmp_path / "mlflow-charts.png"), full_page=True)

            # The same view as a table: the study row's headline metrics, the trials' states.
            page.goto(link.replace("compareRunsMode=CHART", "compareRunsMode=TABLE"), wait_until="load")
            try:
                run_name = page.get_by_text("ui-study", exact=True)
                study_row = page.locator("[role=row]", has=run_name, has_not_text="Group:").first
                study_row.wait_for(timeout=120_000)
                # The grid draws a row in two parts (the pinned run name, the scrolled columns).
                index = study_row.get_attribute("row-index")
                page.locator(f'[role=row][row-index="{index}"]', has_text="0.8125").first.wait_for(
                    timeout=60_000
                )
                study = " ".join(page.locator(f'[role=row][row-index="{index}"]').all_inner_texts())
                table = page.inner_text("body")
            finally:
                page.screenshot(path=str(tmp_path / "mlflow-table.png"), full_page=True)
        finally:
            browser.close()

    # Charts: one line per trial (the pruned one up to its stop epoch) in the study's section;
    # the UI's chart per metric stays in its closed "Model metrics" section.
    for name in names:
        assert f"{name} (val_auc)" in charts, (name, charts)
    assert {"Study", "Model metrics", "learning_rate", "dropout", "optimizer", "value"} <= set(charts)
    assert "val_loss" not in charts and "n_trials_pruned" not in charts
    assert "GenAI" in charts and "Traces" in charts  # the view switch and the tab, not the GenAI overview
    assert "4 matching runs" in charts  # the study run and its three trials
    # Table: best_val_auc, best_test_auc and its interval, best_trial, completed / pruned / failed.
    for column in ("best_val_auc", "best_test_auc", "best_trial", "n_trials_complete", "n_trials_pruned"):
        assert column in table, column
    for value in ("0.8125", "0.75", "0.6", "0.875"):
        assert value in study.split(), (value, study)
    assert all(name in table for name in names)
    assert (tmp_path / "mlflow-charts.png").stat().st_size > 10_000
