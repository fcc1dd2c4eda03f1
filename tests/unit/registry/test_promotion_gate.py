"""The promotion gate, the model card and the registry's trust in trials, on a SQLite store.

Studies are fabricated (real MLflow runs with tiny models and ``test_predictions.csv``, a
real Optuna storage), never trained. Expected numbers are computed here another way
(sklearn's AUC and Brier score, hashlib over the downloaded model file).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from sklearn.metrics import brier_score_loss, roc_auc_score

from clot_hpo.errors import ConfigError
from clot_hpo.registry import promote
from clot_hpo.registry.gate import GateRule
from clot_hpo.search.ledger import TrialLedger
from tests.support.cli import run_main
from tests.support.mlflow_server import tiny_keras_model
from tests.support.promotion import fabricate_study, predictions

WEAK = predictions(separation=0.3, noise_seed=1)
STRONG = predictions(separation=1.5, noise_seed=2)
OTHER_SET = predictions(separation=1.5, seed=9, noise_seed=3)  # other images, other dataset


def _trial(preds: Any, val_auc: float, **extra: Any) -> dict[str, Any]:
    return {"metrics": {"val_auc": val_auc, "threshold": 0.5, **extra}, "predictions": preds}


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("gate")
    uri, storage = f"sqlite:///{root / 'mlflow.db'}", f"sqlite:///{root / 'optuna.db'}"
    runs = {
        "weak": fabricate_study(uri, storage, root, "weak", [_trial(WEAK, 0.70)]),
        "strong": fabricate_study(uri, storage, root, "strong", [_trial(STRONG, 0.90)]),
        # The weak model's predictions again, from another model: no evidence either way.
        "equal": fabricate_study(uri, storage, root, "equal", [{**_trial(WEAK, 0.71), "seed": 5}]),
        "other": fabricate_study(
            uri, storage, root, "other", [_trial(OTHER_SET, 0.95)], digest="digest-other"
        ),
    }
    client = MlflowClient(uri, registry_uri=uri)
    return {"uri": uri, "storage": storage, "root": root, "runs": runs, "client": client}


def _promote(gate: dict[str, Any], study: str, name: str, **rule: Any) -> Any:
    return promote(
        gate["uri"], study, ledger=TrialLedger(gate["storage"]), model_name=name, rule=GateRule(**rule)
    )


class _Version:
    def __init__(self, version: Any) -> None:
        self.version, self.run_id = str(version.version), version.run_id


def _champion(gate: dict[str, Any], name: str) -> _Version:
    return _Version(gate["client"].get_model_version_by_alias(name, "champion"))


def test_a_better_candidate_moves_the_alias_with_its_evidence_recorded(gate: dict[str, Any]) -> None:
    name = "gate-better"
    first = _promote(gate, "weak", name)
    assert first.alias_moved and first.decision == "first champion"
    version1 = gate["client"].get_model_version(name, first.version)
    assert version1.tags["promotion.decision"] == "first champion"
    assert version1.tags["promotion.compared_with"] == "none"

    result = _promote(gate, "strong", name)
    assert result.alias_moved and result.decision == "promoted"
    assert _champion(gate, name).version == result.version
    tags = gate["client"].get_model_version(name, result.version).tags
    expected = roc_auc_score(STRONG["label"], STRONG["probability"]) - roc_auc_score(
        WEAK["label"], WEAK["probability"]
    )
    assert float(tags["promotion.difference"]) == pytest.approx(expected, abs=1e-6)
    low, high = json.loads(tags["promotion.interval"])
    assert 0 < low < expected < high
    assert float(tags["promotion.p_value"]) < 0.05
    assert tags["promotion.metric"] == "auc" and tags["promotion.compared_with"] == first.version
    assert tags["promotion.decision"] == "promoted" and "DeLong paired" in tags["promotion.reason"]
    # One printed line says it.
    assert sum(line.startswith(f"gate: version {result.version} promoted") for line in result.messages) == 1


def test_the_version_records_its_model_files_sha256(gate: dict[str, Any], tmp_path: Path) -> None:
    import mlflow.artifacts

    name = "gate-sha"
    result = _promote(gate, "weak", name)
    version = gate["client"].get_model_version(name, result.version)
    model_id = gate["client"].get_run(result.run_id).data.tags["clot_hpo.model_id"]
    location = gate["client"].get_logged_model(model_id).artifact_location
    path = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{location}/data/model.keras", dst_path=str(tmp_path), tracking_uri=gate["uri"]
    )
    assert version.tags["model_sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_the_model_card_is_written_from_the_runs_facts(gate: dict[str, Any], tmp_path: Path) -> None:
    name = "gate-card"
    result = _promote(gate, "strong", name)
    client = gate["client"]
    files = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"model_card.md", "model_card.json"} <= files
    card = json.loads(
        Path(client.download_artifacts(result.run_id, "model_card.json", str(tmp_path))).read_text()
    )
    assert set(card) >= {
        "model_details",
        "intended_use",
        "training_data",
        "evaluation_data",
        "metrics",
        "calibration",
        "threshold",
        "training",
        "promotion",
        "caveats",
    }
    details = card["model_details"]
    assert details["backbone"] == "tiny_cnn" and details["input"]["image_size"] == 32
    assert details["parameters"] == tiny_keras_model(32).count_params()  # read from the file, not Keras
    assert details["model_file_sha256"] == client.get_model_version(name, result.version).tags["model_sha256"]
    assert any(req.startswith("keras==") for req in details["environment"])
    assert card["training_data"]["dataset_digest"] == "digest-shared"
    assert card["training_data"]["counts"]["test"] == {"positive": 60, "negative": 60}
    assert card["evaluation_data"]["n_images"] == len(STRONG)
    assert card["calibration"]["brier"] == pytest.approx(
        brier_score_loss(STRONG["label"], STRONG["probability"])
    )
    assert card["threshold"]["value"] == 0.5 and card["threshold"]["method"] == "youden"
    caveats = " ".join(card["caveats"])
    assert "synthetic images" in caveats and "random initialisation" in caveats
    assert f"Small test set: {len(STRONG)} images" in caveats
    # From the study's data report: no patient grouping, duplicates across splits.
    assert card["training_data"]["grouped"] is False and "did not keep patients" in caveats
    assert "2 exact and 1 near-duplicate pairs" in caveats
    markdown = Path(client.download_artifacts(result.run_id, "model_card.md", str(tmp_path))).read_text()
    assert "## Intended use" in markdown and "not a medical device" in markdown
    # The registry page shows the version's description: the card's summary.
    description = client.get_model_version(name, result.version).description
    auc = roc_auc_score(STRONG["label"], STRONG["probability"])
    assert "not a diagnostic device" in description and f"| AUC | {auc:.3f} (" in description
    assert "first champion" in description


def test_an_equal_candidate_does_not_move_and_says_why(gate: dict[str, Any]) -> None:
    name = "gate-equal"
    champion = _promote(gate, "weak", name)
    result = _promote(gate, "equal", name)  # the same predictions from another model
    assert result.registered and not result.alias_moved and result.decision == "kept"
    assert _champion(gate, name).version == champion.version
    tags = gate["client"].get_model_version(name, result.version).tags
    assert tags["promotion.decision"] == "kept"
    assert float(tags["promotion.difference"]) == 0.0 and float(tags["promotion.p_value"]) == 1.0
    assert "not proven" in tags["promotion.reason"] and tags["promotion.compared_with"] == champion.version


def test_a_floor_that_fails_blocks_promotion(gate: dict[str, Any]) -> None:
    name = "gate-floor"
    champion = _promote(gate, "weak", name)
    blocked = _promote(gate, "strong", name, min_sensitivity=0.999)
    assert blocked.decision == "blocked" and not blocked.alias_moved
    assert _champion(gate, name).version == champion.version
    reason = gate["client"].get_model_version(name, blocked.version).tags["promotion.reason"]
    assert "below --min-sensitivity 0.999" in reason
    ece = _promote(gate, "strong", name, max_ece=0.001)
    assert ece.decision == "blocked" and "above --max-ece 0.001" in ece.message
    # Floors that hold let the proven difference through.
    passed = _promote(gate, "strong", name, min_sensitivity=0.5, max_ece=0.5)
    assert passed.decision == "promoted" and _champion(gate, name).version == passed.version


def _snapshot(client: MlflowClient, name: str) -> dict[str, Any]:
    versions = client.search_model_versions(f"name = '{name}'")
    return {
        "versions": sorted(
            (v.version, v.run_id, v.description, sorted(v.tags.items()), v.last_updated_timestamp)
            for v in versions
        ),
        "aliases": client.get_registered_model(name).aliases,
        "artifacts": sorted(
            (v.run_id, a.path, a.file_size) for v in versions for a in client.list_artifacts(v.run_id)
        ),
    }


def test_rerunning_promote_changes_nothing(gate: dict[str, Any]) -> None:
    name = "gate-rerun"
    _promote(gate, "strong", name)
    kept = _promote(gate, "weak", name)
    assert kept.decision == "kept"
    before = _snapshot(gate["client"], name)
    again_kept = _promote(gate, "weak", name)
    again_champion = _promote(gate, "strong", name)
    assert _snapshot(gate["client"], name) == before
    assert not again_kept.registered and not again_kept.decided_now and again_kept.decision == "kept"
    assert "recorded earlier, nothing changed" in again_kept.message
    assert "nothing to move" in again_champion.message


def test_a_candidate_on_another_test_set_is_refused_with_exit_2(
    gate: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    name = "gate-other-data"
    champion = _promote(gate, "strong", name)
    args = ["promote", "--tracking-uri", gate["uri"], "--storage", gate["storage"], "--model-name", name]
    proc = run_main(capsys, *args, "--experiment", "other")
    assert proc.returncode == 2, proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(error) == 1 and "Traceback" not in proc.stderr
    assert "dataset digests differ" in error[0] and "--allow-different-test-sets" in error[0]
    assert _champion(gate, name).version == champion.version
    versions = gate["client"].search_model_versions(f"name = '{name}'")
    [refused] = [v for v in versions if str(v.version) != champion.version]
    assert refused.tags["promotion.decision"] == "refused"

    allowed = _promote(gate, "other", name, allow_different_test_sets=True)
    assert allowed.decided_now
    tags = gate["client"].get_model_version(name, refused.version).tags
    assert tags["promotion.decision"] in ("kept", "promoted")
    assert "independent samples" in tags["promotion.reason"]


def _inject(client: MlflowClient, experiment: str, tags: dict[str, str], val_auc: float) -> str:
    """A FINISHED run tagged as a trial, with a model and predictions, that no search ran."""
    from clot_hpo.tracking.model_packaging import keras_file_of, log_keras_model
    from clot_hpo.tracking.store import global_tracking_uri

    exp = client.get_experiment_by_name(experiment)
    run = client.create_run(exp.experiment_id, tags={"clot_hpo.role": "trial", **tags})
    run_id = run.info.run_id
    client.log_metric(run_id, "val_auc", val_auc)
    client.log_metric(run_id, "threshold", 0.5)
    client.log_text(run_id, STRONG.to_csv(index=False), "test_predictions.csv")
    with global_tracking_uri(client.tracking_uri), keras_file_of(tiny_keras_model(32, seed=9)) as keras_file:
        model_id = log_keras_model(
            client, client.tracking_uri, run_id, keras_file, image_size=32, threshold=0.5, step=0
        )
    client.set_tag(run_id, "clot_hpo.model_id", model_id)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def test_a_run_no_optuna_trial_vouches_for_is_refused(gate: dict[str, Any]) -> None:
    client, name = gate["client"], "gate-injected"
    real = client.get_run(gate["runs"]["weak"][0])
    # A run that copies every tag of a real trial (study, number, parent, digest) but is not it.
    copied = {
        k: v for k, v in real.data.tags.items() if k.startswith(("clot_hpo.", "optuna.", "mlflow.parent"))
    }
    forged = _inject(client, "weak", {**copied, "clot_hpo.role": "trial"}, val_auc=0.99)
    bare = _inject(client, "weak", {"clot_hpo.study": "weak"}, val_auc=0.98)  # no parent, trial, digest
    result = _promote(gate, "weak", name)
    assert result.run_id == real.info.run_id
    assert {v.run_id for v in client.search_model_versions(f"name = '{name}'")} == {real.info.run_id}
    refusals = "\n".join(m for m in result.messages if m.startswith("refused"))
    assert forged in refusals and f"records run id {real.info.run_id}" in refusals
    assert bare in refusals and "no trial number, parent run, dataset digest tag" in refusals

    # An experiment holding only an injected run: nothing to promote, exit 2.
    client.create_experiment("only-injected")
    _inject(client, "only-injected", {"clot_hpo.study": "weak"}, val_auc=0.99)
    with pytest.raises(ConfigError, match="that the Optuna storage vouches for") as info:
        promote(
            gate["uri"],
            "only-injected",
            ledger=TrialLedger(gate["storage"]),
            model_name=name,
            direction="maximize",
            metric="val_auc",
        )
    assert info.value.exit_code == 2
    with pytest.raises(ConfigError, match="does not exist"):
        _promote({**gate, "storage": f"sqlite:///{gate['root'] / 'no-optuna.db'}"}, "weak", name)


def test_a_recorded_promotion_whose_alias_is_missing_is_finished(gate: dict[str, Any]) -> None:
    # The tags are written before the alias: a promotion interrupted between the two (or an
    # alias removed by hand) is completed by the next run, not decided again.
    name = "gate-interrupted"
    first = _promote(gate, "weak", name)
    gate["client"].delete_registered_model_alias(name, "champion")
    again = _promote(gate, "weak", name)
    assert (
        again.alias_moved
        and not again.decided_now
        and "(recorded earlier): alias 'champion' set" in again.message
    )
    assert _champion(gate, name).version == first.version
