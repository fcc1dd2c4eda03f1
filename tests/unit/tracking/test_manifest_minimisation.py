"""Issue 12, item 7: by default MLflow gets content hashes, labels, splits and counts only.

A real SQLite MLflow store; the study's inputs are logged as ``run_search`` logs them (the
manifest ``PreparedData.tracked_manifest`` picks for ``tracking.log_manifest``). Then every
artifact, tag, param and the dataset input are searched for file names, paths and group ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from clot_hpo.config import DataConfig
from clot_hpo.data.prepare import prepare_data
from clot_hpo.tracking.mlflow_tracker import MlflowTracker


def _everything_logged(client: MlflowClient, run_id: str, tmp: Path) -> str:
    """Artifacts (but ``config.yaml``), tags, params and dataset inputs of a run, as one text.

    ``config.yaml`` is the user's config: it names the data folder (``data.path``), never a
    file in it, and is checked for names and groups by the ``full`` case's counterpart below.
    """
    run = client.get_run(run_id)
    parts = [json.dumps(run.data.tags), json.dumps(run.data.params)]
    for item in run.inputs.dataset_inputs:
        d = item.dataset
        parts += [d.name, d.digest, d.source_type, d.source, d.schema or "", d.profile or ""]
    local = Path(client.download_artifacts(run_id, "", str(tmp)))
    parts += [
        p.read_text(errors="replace") for p in local.rglob("*") if p.is_file() and p.name != "config.yaml"
    ]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for both cases (creating its schema takes seconds); each has its experiment."""
    return tmp_path_factory.mktemp("mlruns")


@pytest.mark.parametrize("mode", ["keys", "full"])
def test_mlflow_gets_no_file_names_or_group_ids_by_default(
    tmp_path: Path, tiny_dataset: Path, store: Path, mode: str
) -> None:
    prepared = prepare_data(DataConfig(path=str(tiny_dataset)), seed=0, out_dir=tmp_path / "study" / "data")
    tracker = MlflowTracker(
        f"sqlite:///{store / 'mlflow.db'}",
        experiment_name=f"minimal-{mode}",
        artifact_root=str(store / "artifacts"),
        tries=1,
        backoff_s=0.01,
    )
    tracker.check_available()
    run_id = tracker.start_study(f"minimal-{mode}")
    config: dict[str, Any] = {
        "name": "minimal",
        "data": {"path": str(tiny_dataset.resolve())},
        "tracking": {"log_manifest": mode},
    }
    tracker.log_study_inputs(
        config=config,
        search_spaces={},
        manifest_path=prepared.tracked_manifest(mode),
        dataset_digest=prepared.digest,
    )
    text = _everything_logged(MlflowClient(f"sqlite:///{store / 'mlflow.db'}"), run_id, tmp_path / "dl")
    names = [Path(rel).name for rel in prepared.manifest["relpath"]]
    groups = [str(g) for g in prepared.manifest["group"].dropna().unique()]
    assert groups and names
    found = [n for n in [*names, *groups, str(tiny_dataset.resolve())] if n in text]
    if mode == "keys":
        assert found == [], found[:5]
        assert prepared.manifest["sha256"].iloc[0] in text  # pseudonymised keys are there
        assert prepared.digest in text
    else:
        assert set(names) <= set(found) and set(groups) <= set(found)
