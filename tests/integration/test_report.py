"""End to end: a two-backbone study on a real ``mlflow server``, then ``clot-hpo report``.

The study runs the product's two backbones, EfficientNetB1 and ResNet50 (32 px, one epoch,
random initialization, one trial each): the comparison the report exists for. The metadata CSV
gets a ``site`` column, so the subgroup table is drawn too.

Headless Chromium opens the self-contained ``report.html`` (no request leaves the file) and
reads both rows of the results table, with intervals, and the DeLong result. The AUCs and
DeLong's p-value are then recomputed from the two ``test_predictions.csv`` artifacts by
independent methods: scikit-learn's ``roc_auc_score`` (must match the shown AUCs to the 3
shown decimals), DeLong's variance from the pairwise placement values of DeLong et al. (1988),
an O(mn) formula instead of the report's midrank algorithm (p-value, difference and interval
must match to the 3 shown decimals), and a paired bootstrap (2000 resamples, each AUC the
Mann-Whitney statistic over midranks), whose standard
error must lie within 25% of DeLong's and whose percentile interval's ends within 0.06 of
DeLong's. ``CLOT_HPO_SCREENSHOT=docs/report.png`` keeps the screenshot for the docs.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.cli import run_cli
from tests.support.mlflow_server import MlflowServer, mlflow_server  # noqa: F401  (fixture)
from tests.support.stats import delong_by_placements

A, B = "efficientnet_b1", "resnet50"  # the report orders a pair by name: A − B
INTERVAL = r"\d\.\d{3} \(\d\.\d{3}–\d\.\d{3}\)"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (`make system-deps` installs it)"
    ),
]

SPACES = {
    "efficientnet_b1": "backbone: efficientnet_b1\nparameters:\n  image_size: {type: fixed, value: 32}\n"
    "  batch_size: {type: fixed, value: 16}\n"
    "  learning_rate: {type: float, low: 5.0e-4, high: 3.0e-3, log: true, default: 1.0e-3}\n"
    "  freeze_epochs: {type: fixed, value: 0}\n  unfreeze_fraction: {type: fixed, value: 1.0}\n",
    "resnet50": "backbone: resnet50\nparameters:\n  image_size: {type: fixed, value: 32}\n"
    "  batch_size: {type: fixed, value: 16}\n"
    "  learning_rate: {type: float, low: 5.0e-4, high: 3.0e-3, log: true, default: 1.0e-3}\n"
    "  freeze_epochs: {type: fixed, value: 0}\n  unfreeze_fraction: {type: fixed, value: 1.0}\n",
}


@pytest.fixture(scope="module")
def reported(
    mlflow_server: MlflowServer,  # noqa: F811
    tiny_dataset: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The study (each backbone's defaults: one trial each), then its report."""
    work = tmp_path_factory.mktemp("report")
    data = work / "data"
    shutil.copytree(tiny_dataset, data)
    metadata = pd.read_csv(data / "metadata.csv")
    metadata["site"] = np.where(np.arange(len(metadata)) % 3 == 0, "south", "north")
    metadata.to_csv(data / "metadata.csv", index=False)
    for backbone, text in SPACES.items():
        (work / f"{backbone}.yaml").write_text(text)
    (work / "exp.yaml").write_text(
        "name: reported\nseed: 3\n"
        "data: {path: data, val_fraction: 0.25, test_fraction: 0.35}\n"
        "training: {epochs: 1, weights: none}\n"
        # No per-epoch checkpoint (resume: false): ResNet50's, with its optimizer state, is
        # hundreds of MB written for a retry this test never makes.
        "search: {backbones: [efficientnet_b1, resnet50], pruner: none, n_trials: 2, resume: false,\n"
        "  search_spaces: {efficientnet_b1: efficientnet_b1.yaml, resnet50: resnet50.yaml}}\n"
        "budget: {vram_gb: 4}\nevaluation: {bootstrap_samples: 100, explanations: false}\n"
        "tracking: {log_model: false}\n"
    )
    storage = f"sqlite:///{work}/optuna.db"
    search = run_cli(
        "search", "exp.yaml", "--storage", storage, "--tracking-uri", mlflow_server.uri, cwd=work
    )
    assert search.returncode == 0, search.stderr[-3000:]
    out = work / "report-out"
    result = run_cli(
        "report", "--experiment", "reported", "--tracking-uri", mlflow_server.uri, "--out", str(out)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {"uri": mlflow_server.uri, "out": out, "stdout": result.stdout, "work": work}


def _test_predictions(uri: str, dest: Path) -> dict[str, pd.DataFrame]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("reported")
    runs = client.search_runs([experiment.experiment_id], "tags.`clot_hpo.role` = 'trial'")
    out = {}
    for run in runs:
        local = client.download_artifacts(
            run.info.run_id, "test_predictions.csv", str(dest / run.info.run_id)
        )
        out[run.data.params["backbone"]] = pd.read_csv(local, dtype={"key": str})
    return out


def _mann_whitney_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each row's AUC as the Mann-Whitney statistic over midranks (NaN for a row of one class).

    The same number as ``roc_auc_score`` per row, for all of a bootstrap's resamples at once
    (2000 calls of ``roc_auc_score`` per model took about 7 s of CPU).
    """
    ranks = rankdata(scores, axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * labels).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def test_the_report_opens_in_chromium_and_its_numbers_are_recomputed(
    reported: dict[str, Any], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    page_file = reported["out"] / "report.html"
    assert str(page_file.resolve()) in reported["stdout"]
    screenshot = Path(os.environ.get("CLOT_HPO_SCREENSHOT") or tmp_path / "report.png")
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1180, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            results = page.locator("#results-table tbody tr").all_inner_texts()
            delong = page.locator("#delong-table tbody tr").all_inner_texts()
            finding = page.locator("p.finding").first.inner_text()
            subgroups = page.locator("#subgroup-site tbody tr").count()
            images = page.locator("img").evaluate_all("imgs => imgs.map(i => [i.complete, i.naturalWidth])")
            page.locator("#results").scroll_into_view_if_needed()
            page.screenshot(path=str(screenshot), full_page=False)
        finally:
            browser.close()
    # Self-contained: nothing but the file itself and its embedded data: URIs.
    assert requests and all(u.startswith(("file://", "data:")) for u in requests), requests
    assert images and all(done and width > 100 for done, width in images), images
    assert len(results) == 2, results
    # An interval sits under its point estimate in the page: one space between them here.
    split_rows = [[" ".join(cell.split()) for cell in text.split("\t")] for text in results]
    rows = {cells[0]: cells for cells in split_rows}
    assert set(rows) == {A, B}
    for cells in rows.values():
        # Accuracy, precision, recall, sensitivity, specificity, PPV, NPV, AUC, F1, PR AUC: each
        # with its interval.
        assert all(re.fullmatch(INTERVAL, c) for c in cells[3:13]), cells
    assert subgroups == 4, "two sites per backbone"

    # Independent recomputation from the two artifacts.
    preds = _test_predictions(reported["uri"], tmp_path)
    joined = preds[A].merge(preds[B], on="key", suffixes=("_a", "_b"), validate="one_to_one")
    assert len(joined) == len(preds[A]) == len(preds[B]), "the same test images"
    y = joined["label_a"].to_numpy()
    pa, pb = joined["probability_a"].to_numpy(), joined["probability_b"].to_numpy()
    for name, p in ((A, pa), (B, pb)):
        assert rows[name][10].startswith(f"{roc_auc_score(y, p):.3f} "), (name, rows[name][10])
    [line] = delong
    cells = [" ".join(cell.split()) for cell in line.split("\t")]
    assert cells[0] == f"{A} − {B}"  # pairs in name order
    difference, se = delong_by_placements(y, pa, pb)
    assert difference == pytest.approx(roc_auc_score(y, pa) - roc_auc_score(y, pb), abs=1e-12)
    p_value = 2 * norm.sf(abs(difference) / se)
    shown_p = "< 0.001" if p_value < 0.001 else f"{p_value:.3f}"
    assert cells[1:6] == [
        f"{roc_auc_score(y, pa):.3f}",
        f"{roc_auc_score(y, pb):.3f}",
        f"{difference:+.3f}",
        f"{difference - 1.959964 * se:+.3f} to {difference + 1.959964 * se:+.3f}",
        shown_p,
    ], cells
    significant = "is statistically significant" if p_value < 0.05 else "is not statistically significant"
    assert significant in finding.replace("the difference is statistically", "is statistically")

    idx = np.random.default_rng(0).integers(0, y.size, (2000, y.size))
    boot = _mann_whitney_auc(y[idx], pa[idx]) - _mann_whitney_auc(y[idx], pb[idx])
    boot = boot[~np.isnan(boot)]  # a resample with one class has no AUC
    assert np.std(boot) == pytest.approx(se, rel=0.25)
    low, high = np.quantile(boot, [0.025, 0.975])
    assert low == pytest.approx(difference - 1.959964 * se, abs=0.06)
    assert high == pytest.approx(difference + 1.959964 * se, abs=0.06)


def test_the_report_is_attached_to_the_study_run(reported: dict[str, Any]) -> None:
    client = MlflowClient(reported["uri"])
    experiment = client.get_experiment_by_name("reported")
    [study] = client.search_runs([experiment.experiment_id], "tags.`clot_hpo.role` = 'study'")
    files = {a.path for a in client.list_artifacts(study.info.run_id, "report")}
    assert files == {"report/report.html", "report/report.md"}
    markdown = (reported["out"] / "report.md").read_text()
    assert "## Paired comparison of the backbones" in markdown and "McNemar" in markdown
    assert (reported["out"] / "figures" / "reliability.png").is_file()
