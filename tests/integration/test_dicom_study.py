"""Issue 23: a DICOM study end to end on a real ``mlflow server``, and what never leaves the machine.

One synthetic set written as 16-bit DICOM (half MONOCHROME1, rescale slope and intercept, a
PatientID per patient, fictitious identifying header values) goes through the commands a
user runs: ``validate-data``, ``search`` (tiny CNN, 32 px), ``promote``, ``predict``,
``evaluate``, ``explain`` and ``report``. Then:

- the model learnt (test AUC >= 0.90), and ``predict`` reads DICOM files no one here made
  (every DICOM file pydicom's wheel ships gets a probability or a one-line refusal);
- every identifying value of the files' headers (PS3.15 Annex E, see
  :mod:`tests.support.dicom`) is searched for in every file the study, the commands and the
  server wrote, in every MLflow record, and in every command's output: none is found.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow.models
import pytest
from mlflow import MlflowClient

from clot_hpo.data.dicom import DicomRefused, decode_dicom
from clot_hpo.data.synthetic_dicom import make_synthetic_dicom
from clot_hpo.tracking.store import global_tracking_uri
from tests.support.cli import REPO, run_cli
from tests.support.dicom import grep_files, identifying_values, shipped_test_files
from tests.support.mlflow_server import MlflowServer, mlflow_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

STUDY = "dicom-study"
# The synthetic files carry no window: this one (about their full range of -1024..31743.5 HU)
# is the training's, stored with the model.
WINDOW = (15360.0, 32768.0)
MODEL = "dicom-clot-detector"
SPACE = """backbone: tiny_cnn
parameters:
  image_size: {type: fixed, value: 32}
  batch_size: {type: fixed, value: 16}
  optimizer: {type: fixed, value: adam}
  learning_rate: {type: fixed, value: 3.0e-3}
  dropout: {type: fixed, value: 0.0}
  pooling: {type: fixed, value: max}
  use_dense: {type: fixed, value: false}
  aug_flip: {type: fixed, value: true}
"""


@pytest.fixture(scope="module")
def study(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    """The DICOM study, promoted, and the output of every command run on it."""
    work = tmp_path_factory.mktemp("dicom-study")
    data = make_synthetic_dicom(work / "data", n_per_class=50, image_size=32, seed=1)
    (work / "space.yaml").write_text(SPACE)
    # No Grad-CAM gallery per trial (explanations: false): `explain` below draws DICOM overlays,
    # and the gallery's pixels carry no header value.
    (work / "exp.yaml").write_text(
        f"name: {STUDY}\nseed: 7\n"
        f"data: {{val_fraction: 0.2, test_fraction: 0.2, dicom: {{window: {list(WINDOW)}}}}}\n"
        "training: {epochs: 8, weights: none}\n"
        "search: {backbones: [tiny_cnn], search_spaces: {tiny_cnn: space.yaml}, pruner: none}\n"
        f"tracking: {{model_name: {MODEL}}}\n"
        "budget: {vram_gb: 4}\nevaluation: {bootstrap_samples: 200, explanations: false}\n"
    )
    uri = mlflow_server.uri
    storage = f"sqlite:///{work}/optuna.db"
    outputs: list[subprocess.CompletedProcess[str]] = []

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        result = run_cli(*args, cwd=work)
        outputs.append(result)
        assert result.returncode == 0, (args, result.stderr[-3000:])
        return result

    common = ("--tracking-uri", uri)
    cli("validate-data", str(data))
    cli("search", "exp.yaml", "--data", str(data), "--storage", storage, *common, "--n-trials", "1")
    cli("promote", "--config", "exp.yaml", "--storage", storage, "--experiment", STUDY, *common)
    model = ("--model", f"models:/{MODEL}@champion", *common)
    some = sorted(data.rglob("*.dcm"))[:3]
    predicted = cli("predict", *model, *map(str, some))  # windowed as in training: no flag needed
    evaluated = cli("evaluate", *model, "--data", str(data), "--json")
    # Another window than the training's is applied, but not silently.
    other_window = ("--dicom-window", "0", "30000")
    explained = cli("explain", *model, "--out", str(work / "overlays"), *other_window, *map(str, some[:2]))
    cli("report", "--experiment", STUDY, *common, "--out", str(work / "report"))
    return {
        "work": work,
        "data": data,
        "uri": uri,
        "outputs": outputs,
        "predicted": predicted,
        "evaluated": evaluated,
        "explained": explained,
    }


def _runs(uri: str) -> tuple[MlflowClient, Any, list[Any]]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(STUDY)
    return client, experiment, client.search_runs([experiment.experiment_id], max_results=100)


def test_a_dicom_study_learns_and_predicts(study: dict[str, Any]) -> None:
    client, _, runs = _runs(study["uri"])
    champion = client.get_model_version_by_alias(MODEL, "champion")
    trial = client.get_run(champion.run_id)
    assert trial.data.metrics["test_auc"] >= 0.90, trial.data.metrics
    lines = [json.loads(x) for x in study["predicted"].stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 3 and all(0 <= line["probability"] <= 1 for line in lines)
    report = json.loads(
        (study["work"] / "mlruns" / "studies" / STUDY / "data" / "data_report.json").read_text()
    )
    assert report["group_source"] == "dicom PatientID (salted hash)"
    assert report["patients"]["all"] == 25 and report["patients"]["in_several_splits"] == 0
    assert any(r.data.tags.get("clot_hpo.role") == "study" for r in runs)


def test_the_model_carries_its_dicom_window_to_every_command(study: dict[str, Any]) -> None:
    client, _, _ = _runs(study["uri"])
    champion = client.get_model_version_by_alias(MODEL, "champion")
    with global_tracking_uri(study["uri"]):
        info = mlflow.models.get_model_info(f"models:/{MODEL}/{champion.version}")
    assert info.metadata["dicom"] == {"window": list(WINDOW), "frame": None}
    # predict and evaluate were given no window: the training's applies, without a word.
    assert "warning" not in study["predicted"].stderr
    evaluated = json.loads(study["evaluated"].stdout)
    assert evaluated["dicom"] == {"window": list(WINDOW), "frame": None}
    assert evaluated["metrics"]["auc"] >= 0.9
    # explain was given another: it applies, with one line saying so.
    warned = [line for line in study["explained"].stderr.splitlines() if "warning" in line]
    assert warned == [
        f"clot-hpo: warning: the model was trained on DICOM pixels with each file's own window, else "
        f"[center, width] {list(WINDOW)}, single-frame files only, but these settings apply each "
        "file's own window, else [center, width] [0.0, 30000.0], single-frame files only: its "
        "probabilities on DICOM files are not the ones it was validated with"
    ]


def test_no_identifying_header_value_leaves_the_machine(
    study: dict[str, Any], mlflow_server: MlflowServer
) -> None:  # noqa: F811
    values = identifying_values(study["data"].rglob("*.dcm"))
    # 100 files: a name (and its parts), ID, other ID, birth date, address, phone, accession,
    # study ID and date, physician, description per patient; UIDs and comments per file.
    assert len(values) >= 700, len(values)
    print(f"\nidentifying values searched for: {len(values)}")
    # Every file written: the study's folders and stores, the data folder's own outputs (not
    # the DICOM files themselves), the report, the overlays, the server's database, artifacts
    # and log.
    work, data = study["work"], study["data"]
    found = grep_files(mlflow_server.root, values)
    for path in work.iterdir():
        if path != data:
            found += grep_files(path, values) if path.is_dir() else grep_files_one(path, values)
    found += grep_files(data / ".clot-hpo", values)
    assert found == [], found[:10]
    # Every command's output and log lines.
    for result in study["outputs"]:
        text = result.stdout + result.stderr
        assert not [v for v in values if v in text], result.args
    # Every MLflow record, through the API.
    client, experiment, runs = _runs(study["uri"])
    records = [str(experiment.tags)]
    for run in runs:
        records += [
            str(run.data.params),
            str(run.data.tags),
            str(list(run.data.metrics)),
            str(run.info.run_name),
        ]
        records += [str(d.dataset) + str(d.tags) for d in run.inputs.dataset_inputs]
    for model in client.search_logged_models(experiment_ids=[experiment.experiment_id]):
        records += [str(model.params), str(model.tags), str(model.name)]
    for version in client.search_model_versions(f"name='{MODEL}'"):
        records += [str(version.tags), str(version.description), str(version.aliases)]
    record_text = "\n".join(records)
    assert not [v for v in values if v in record_text]


def test_the_explanations_switch_keeps_images_out_of_tracking(study: dict[str, Any]) -> None:
    """``evaluation.explanations: false``: no trial logs its failure gallery (images of the data).

    The server is on a loopback address, so its artifacts stay on this machine and the default
    (``auto``) would log the gallery (tests/integration/test_trial_gallery.py): the switch is
    what keeps it out.
    """
    client, _, runs = _runs(study["uri"])
    trials = [r for r in runs if r.data.tags.get("clot_hpo.role") == "trial"]
    assert trials
    for run in trials:
        assert client.list_artifacts(run.info.run_id, "explanations") == [], run.info.run_name


def grep_files_one(path: Path, values: set[str]) -> list[tuple[str, str]]:
    data = path.read_bytes()
    return [(str(path), v) for v in values if v.encode() in data]


# The readable files are predicted and each refused file is checked in one process (the header
# check comes before the model is loaded), through the same ``main`` as `clot-hpo predict FILE`:
# one interpreter and one model load instead of two.
_PREDICT_AND_REFUSE = """
import contextlib, io, json, sys
from clot_hpo.cli import main
uri, model, n_readable = sys.argv[1], sys.argv[2], int(sys.argv[3])
readable, refused = sys.argv[4 : 4 + n_readable], sys.argv[4 + n_readable :]
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
    code = main(["predict", "--tracking-uri", uri, "--model", model, *readable])
print(json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()[-3000:]}))
for path in refused:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["predict", "--tracking-uri", uri, "--model", model, path])
    print(json.dumps({"file": path, "code": code, "stderr": err.getvalue()}))
"""


def test_every_dicom_file_pydicom_ships_is_predicted_or_refused_in_one_line(study: dict[str, Any]) -> None:
    files = shipped_test_files()
    readable, refused = [], []
    for path in files:
        try:
            decode_dicom(path, max_pixels=50_000_000)
            readable.append(path)
        except DicomRefused:
            refused.append(path)
    outcome = subprocess.run(
        [
            sys.executable,
            "-c",
            _PREDICT_AND_REFUSE,
            study["uri"],
            f"models:/{MODEL}@champion",
            str(len(readable)),
            *map(str, readable + refused),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=600,
        check=False,
    )
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    predicted, *results = (json.loads(line) for line in outcome.stdout.splitlines() if line.startswith("{"))
    assert predicted["code"] == 0, predicted["stderr"]
    lines = {
        x["image"]: x
        for x in map(json.loads, (s for s in predicted["stdout"].splitlines() if s.startswith("{")))
    }
    assert sorted(lines) == sorted(map(str, readable))
    assert all(0.0 <= line["probability"] <= 1.0 for line in lines.values())
    assert len(results) == len(refused)
    for result in results:
        assert result["code"] == 2, result
        line = result["stderr"].strip()
        assert "\n" not in line and line.startswith(
            f"clot-hpo: error: 1 unusable image(s): {result['file']}: "
        ), line
    assert len(readable) + len(refused) == len(files) >= 100
