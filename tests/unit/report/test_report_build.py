"""The report from a real MLflow store holding a study's runs, without training anything.

The runs are written with MlflowClient the way the tracker lays them out (tags, params,
metrics, predictions files, the study run's files); the predictions are drawn so that one
backbone is clearly better than the other. Everything the report states is checked against
an independent computation on the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from clot_hpo.errors import ConfigError
from clot_hpo.evaluate.metrics import binary_metrics, choose_threshold
from clot_hpo.evaluate.predictions import predictions_csv
from clot_hpo.render import document as render_document
from clot_hpo.render.document import Table, to_html, to_markdown
from clot_hpo.report.build import build_report
from clot_hpo.tracking.study_reader import read_study
from tests.support.cli import run_main
from tests.support.stats import delong_by_placements

N_TEST, N_VAL = 80, 40


def _keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:062x}" for i in range(n)]


def _scores(rng: np.random.Generator, labels: np.ndarray, separation: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(separation * (labels - 0.5) + rng.normal(0, 1, labels.size))))


def _write_study(
    root: Path,
    name: str,
    *,
    backbones: dict[str, float | None],
    extra_trials: int = 0,
    metadata: bool = True,
    other_test_set: str | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """A study in its own experiment: one completed trial per backbone (separation None: no files)."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())
    rng = np.random.default_rng(7)
    y_test = np.array([0, 1] * (N_TEST // 2))
    y_val = np.array([0, 1] * (N_VAL // 2))
    test_keys, val_keys = _keys("aa", N_TEST), _keys("bb", N_VAL)
    data = root / f"data-{name}"
    data.mkdir()
    files = root / f"files-{name}"
    files.mkdir()
    manifest = pd.DataFrame(
        {
            "relpath": [f"img/{i:03d}.png" for i in range(N_TEST + N_VAL)],
            "label": np.r_[y_test, y_val],
            "split": ["test"] * N_TEST + ["val"] * N_VAL,
            "sha256": test_keys + val_keys,
        }
    )
    (files / "data").mkdir()
    manifest.to_csv(files / "data" / "split_manifest.csv", index=False)
    if metadata:
        pd.DataFrame(
            {
                "image": manifest["relpath"],
                "label": np.where(manifest["label"] == 1, "positive", "negative"),
                "site": np.where(np.arange(len(manifest)) % 4 < 2, "north", "south"),
            }
        ).to_csv(data / "metadata.csv", index=False)
    report = {
        "data_path": str(data),
        "layout": "metadata",
        "source": str(data / "metadata.csv"),
        "grouped": False,
        "classes": {"1": "positive", "0": "negative"},
        "counts": {"test": {"positive": 40, "negative": 40}, "val": {"positive": 20, "negative": 20}},
        "digest": "d" * 64,
        "leakage": {"has_leakage": False, "n_images": 120, "max_distance": 4, "within_split_exact": 0},
    }
    (files / "data" / "data_report.json").write_text(json.dumps(report))
    (files / "config.yaml").write_text(
        f"seed: 5\ndata: {{path: {data}}}\n"
        f"evaluation: {{threshold: youden, bootstrap_samples: 300, confidence_level: {confidence}}}\n"
    )
    parent = client.create_run(
        exp,
        run_name=name,
        tags={
            "clot_hpo.role": "study",
            "clot_hpo.study": name,
            "clot_hpo.objective": "val_auc",
            "optuna.direction": "maximize",
            "clot_hpo.dataset_digest": "d" * 64,
        },
    ).info.run_id
    client.log_artifact(parent, str(files / "config.yaml"))
    client.log_artifacts(parent, str(files / "data"), "data")
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    number = 0
    for backbone, separation in backbones.items():
        for extra in range(1 + extra_trials):
            run = client.create_run(
                exp,
                run_name=f"trial-{number}",
                tags={
                    "clot_hpo.role": "trial",
                    "mlflow.parentRunId": parent,
                    "optuna.trial_number": str(number),
                    "optuna.trial_state": "COMPLETE",
                },
            ).info.run_id
            lr = 10 ** -(2 + extra)
            client.log_param(run, "backbone", backbone)
            client.log_param(run, f"{backbone}.learning_rate", lr)
            client.log_param(run, "epochs", 2)
            best = extra == 0
            val_auc = (0.9 if best else 0.6) - 0.01 * number
            client.log_metric(run, "val_auc", val_auc)
            client.log_metric(run, "test_auc", 0.5)
            client.log_metric(run, "test_accuracy", 0.5)
            client.log_metric(run, "threshold", 0.5)
            if separation is not None:
                sep = separation if best else 0.1
                pv, pt = _scores(rng, y_val, sep), _scores(rng, y_test, sep)
                client.log_text(run, predictions_csv(val_keys, y_val, pv), "val_predictions.csv")
                keys = _keys("cc", N_TEST) if backbone == other_test_set else test_keys
                client.log_text(run, predictions_csv(keys, y_test, pt), "test_predictions.csv")
                if best:
                    scores[backbone] = (pv, pt)
            client.set_terminated(run, "FINISHED")
            number += 1
    client.set_terminated(parent, "FINISHED")
    return {"uri": uri, "y_test": y_test, "y_val": y_val, "scores": scores, "data": data}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("report-store")
    return {
        "root": root,
        "two": _write_study(root, "two", backbones={"resnet50": 3.0, "tiny_cnn": 0.8}, extra_trials=2),
        "one": _write_study(root, "one", backbones={"resnet50": 2.0}, metadata=False),
        "old": _write_study(root, "old", backbones={"resnet50": None, "tiny_cnn": 1.0}),
        "apart": _write_study(
            root,
            "apart",
            backbones={"resnet50": 2.0, "tiny_cnn": 1.0},
            metadata=False,
            other_test_set="tiny_cnn",
        ),
        "ninety": _write_study(
            root, "ninety", backbones={"resnet50": 3.0, "tiny_cnn": 0.8}, metadata=False, confidence=0.9
        ),
    }


def _table(report: Any, ident: str) -> Table:
    return next(b for b in report.document.blocks if isinstance(b, Table) and b.ident == ident)


def test_the_table_reproduces_each_backbones_best_trial_from_its_files(
    store: dict[str, Any], tmp_path: Path
) -> None:
    study = store["two"]
    report = build_report(read_study(study["uri"], "two", folder=tmp_path))
    assert [c.backbone for c in report.candidates] == ["resnet50", "tiny_cnn"]
    assert [c.trial.number for c in report.candidates] == [0, 3], "the best by val_auc, not the last"
    rows = _table(report, "results-table").rows
    for cand, row in zip(report.candidates, rows, strict=True):
        pv, pt = study["scores"][cand.backbone]
        threshold = choose_threshold(study["y_val"], pv)
        seed = 5 + cand.trial.number + 1  # the trial's own seed for its test intervals
        expected = binary_metrics(study["y_test"], pt, threshold=threshold, n_bootstrap=300, seed=seed)
        assert cand.threshold == pytest.approx(threshold)
        assert row[2] == f"{threshold:.3f}"
        auc = row[3 + 7]  # Accuracy, Precision, Recall, Sensitivity, Specificity, PPV, NPV, then AUC
        assert auc == f"{expected['auc']:.3f} ({expected['auc_ci_low']:.3f}–{expected['auc_ci_high']:.3f})"
        low, high = expected["accuracy_ci_low"], expected["accuracy_ci_high"]
        assert row[3] == f"{expected['accuracy']:.3f} ({low:.3f}–{high:.3f})"
        assert row[-1] == str(N_TEST)


def test_paired_delong_agrees_with_an_independent_computation(store: dict[str, Any], tmp_path: Path) -> None:
    study = store["two"]
    report = build_report(read_study(study["uri"], "two", folder=tmp_path))
    [comparison] = report.comparisons
    y = study["y_test"]
    pa, pb = study["scores"]["resnet50"][1], study["scores"]["tiny_cnn"][1]
    # DeLong by its original definition: placement values from pairwise comparisons (O(mn)).
    _, se = delong_by_placements(y, pa, pb)
    diff = roc_auc_score(y, pa) - roc_auc_score(y, pb)
    p_value = 2 * norm.sf(abs(diff) / se)
    d = comparison.delong
    assert d is not None
    assert d.difference == pytest.approx(diff, abs=1e-12)
    assert d.p_value == pytest.approx(p_value, rel=1e-9)
    assert d.ci_low == pytest.approx(diff - 1.959963984540054 * se, abs=1e-9)
    text = to_markdown(report.document)
    assert "resnet50 has a higher AUC than tiny_cnn, and the difference is statistically significant" in text
    assert f"{diff:+.3f}" in text
    assert comparison.mcnemar is not None and comparison.mcnemar.n == N_TEST


def test_the_paired_interval_has_the_studys_confidence_level(store: dict[str, Any], tmp_path: Path) -> None:
    study = store["ninety"]
    report = build_report(read_study(study["uri"], "ninety", folder=tmp_path))
    [comparison] = report.comparisons
    y = study["y_test"]
    _, se = delong_by_placements(y, study["scores"]["resnet50"][1], study["scores"]["tiny_cnn"][1])
    d = comparison.delong
    assert d is not None and d.confidence == 0.9
    assert d.ci_low == pytest.approx(d.difference - norm.ppf(0.95) * se, abs=1e-9)
    assert _table(report, "delong-table").columns[4] == "90% interval"
    text = to_markdown(report.document)
    assert f"90% interval {d.ci_low:+.3f} to {d.ci_high:+.3f}" in text and "95% interval" not in text


def test_calibration_search_data_and_subgroups(store: dict[str, Any], tmp_path: Path) -> None:
    report = build_report(read_study(store["two"]["uri"], "two", folder=tmp_path))
    text = to_markdown(report.document)
    calibration = _table(report, "calibration-table").rows
    assert [r[0] for r in calibration] == ["resnet50", "tiny_cnn"]
    states = _table(report, "states-table").rows
    assert states[-1] == ["all", "6", "0", "0", "0", "6"]
    importances = _table(report, "importances-table")
    assert importances.columns == ["Parameter", "all trials", "resnet50", "tiny_cnn"]
    # Per backbone, the prefix is dropped: the two best trials' parameters line up.
    assert _table(report, "params-table").rows == [["learning_rate", "0.01", "0.01"]]
    counts = _table(report, "counts-table").rows
    assert counts == [["val", "20", "20", "40"], ["test", "40", "40", "80"]]
    assert "no duplicate crosses splits among 120 images" in text
    site = _table(report, "subgroup-site").rows
    assert sorted((r[0], r[1], r[2]) for r in site) == [
        ("resnet50", "north", "40"),
        ("resnet50", "south", "40"),
        ("tiny_cnn", "north", "40"),
        ("tiny_cnn", "south", "40"),
    ]
    page = to_html(report.document)
    assert page.count("data:image/png;base64,") == 3  # reliability, history, importances
    assert 'id="results-table"' in page and "<script" not in page


def test_one_backbone_has_no_paired_section_and_says_why(store: dict[str, Any], tmp_path: Path) -> None:
    report = build_report(read_study(store["one"]["uri"], "one", folder=tmp_path))
    assert report.comparisons == []
    text = to_markdown(report.document)
    assert "Only one backbone (resnet50) has a completed trial with predictions files: no paired" in text
    assert "No subgroup table: the data has no metadata CSV here" in text


def test_trials_without_predictions_files_are_reported_from_their_metrics(
    store: dict[str, Any], tmp_path: Path
) -> None:
    report = build_report(read_study(store["old"]["uri"], "old", folder=tmp_path))
    old = next(c for c in report.candidates if c.backbone == "resnet50")
    assert not old.from_files and old.metrics["auc"] == 0.5
    assert any("No predictions files for resnet50 (trial 0)" in n for n in report.notes)
    assert report.comparisons == []
    assert "the other rows come from older runs without them" in to_markdown(report.document)


def test_the_command_writes_logs_and_refuses_a_bad_experiment(
    store: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = store["two"]["uri"]
    # The templates the renderer used: the model card's too (tests/unit/registry/test_card_document.py).
    rendered: list[str] = []
    for cached in ("_markdown_templates", "_html_templates"):
        env = getattr(render_document, cached)()
        spy = SimpleNamespace(
            get_template=lambda name, env=env: rendered.append(name) or env.get_template(name)
        )
        monkeypatch.setattr(render_document, cached, lambda spy=spy: spy)
    result = run_main(
        capsys, "report", "--experiment", "two", "--tracking-uri", uri, "--out", str(tmp_path / "r")
    )
    assert result.returncode == 0, result.stderr
    assert sorted(rendered) == ["document.html.j2", "document.md.j2"]
    assert str((tmp_path / "r" / "report.html").resolve()) in result.stdout
    assert (tmp_path / "r" / "figures" / "reliability.png").stat().st_size > 1000
    client = MlflowClient(uri)
    parent = client.search_runs(
        [client.get_experiment_by_name("two").experiment_id], "tags.`clot_hpo.role` = 'study'"
    )[0]
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} == {
        "report/report.html",
        "report/report.md",
    }
    bad = run_main(capsys, "report", "--experiment", "nope", "--tracking-uri", uri)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"clot-hpo: error: MLflow experiment 'nope' at {uri} does not exist "
        "(experiments there: apart, ninety, old, one, two)"
    ]
    with pytest.raises(ConfigError, match="does not exist"):
        read_study(uri, "missing", folder=tmp_path)


def test_backbones_scored_on_different_images_are_not_compared(store: dict[str, Any], tmp_path: Path) -> None:
    report = build_report(read_study(store["apart"]["uri"], "apart", folder=tmp_path))
    [comparison] = report.comparisons
    assert comparison.delong is None and comparison.mcnemar is None
    assert "only in resnet50" in comparison.problem
    text = to_markdown(report.document)
    assert "The backbones' test sets differ" in text
    assert "resnet50 and tiny_cnn could not be compared: a paired comparison needs the same images" in text
