"""A small champion model, built and registered the way the product does it, and the page's app.

:func:`register_tiny_champion` trains the product's ``ClotHyperModel`` with the ``tiny_cnn``
backbone at 32 px on a synthetic set for a few epochs, logs it as a trial of a study with
:class:`MlflowTracker` (params, test metrics with an interval, ``test_predictions.csv``, the
model) into a temporary SQLite store, records the trial in an Optuna storage as the search
does (``promote`` takes only trials it vouches for), promotes it to
``blood-clot-detector@champion`` and replaces the model card promote wrote with
:data:`MODEL_CARD` (the page must escape it and hide its absolute path): what ``make demo``
leaves behind, in seconds.

:func:`running_app` serves an application with uvicorn on a free loopback port in a thread
of the test process; the fixture stops it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.mlflow_server import free_port

IMAGE_SIZE = 32
MODEL_CARD = (
    "# blood-clot-detector\n\nA test model trained on synthetic images. <script>alert(1)</script>\n"
    "Data: source `/home/ana/scans/clots` (synthetic).\n"
)


@dataclass
class Champion:
    """A registered champion in a SQLite store, and images to send it."""

    tracking_uri: str
    model_uri: str
    data: Path  # synthetic images, Kaggle layout (positive/, negative/)
    test_auc: float

    @property
    def positive(self) -> Path:
        return sorted((self.data / "positive").glob("*.png"))[0]

    @property
    def negative(self) -> Path:
        return sorted((self.data / "negative").glob("*.png"))[0]


class _Space:
    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def sample(self, hp: Any, prefix: str = "") -> dict[str, Any]:
        return {"image_size": self.image_size, "aug_flip": False, "dropout": 0.0, "learning_rate": 3e-3}


def register_tiny_champion(
    root: Path,
    *,
    epochs: int = 12,
    n_per_class: int = 60,
    backbone: str = "tiny_cnn",
    image_size: int = IMAGE_SIZE,
) -> Champion:
    """Train, log and promote a model under ``root`` (store ``root/mlflow.db``).

    The tiny CNN at 32 px by default; the benchmark builds the demo's backbones at 48 px
    (``epochs=0`` registers the untrained model: latency does not depend on the weights).
    """
    import hashlib

    import keras
    import keras_tuner
    import numpy as np
    import optuna
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from clot_hpo.data.pipeline import load_image_batch
    from clot_hpo.data.synthetic import make_synthetic
    from clot_hpo.models.hypermodel import ClotHyperModel
    from clot_hpo.registry import promote
    from clot_hpo.search.ledger import TrialLedger
    from clot_hpo.tracking.mlflow_tracker import MlflowTracker
    from tests.support.promotion import record_ledger

    data = make_synthetic(root / "data", n_per_class=n_per_class, image_size=image_size, seed=5)
    paths = sorted((data / "positive").glob("*.png")) + sorted((data / "negative").glob("*.png"))
    x = load_image_batch(paths, image_size)
    y = np.r_[np.ones(n_per_class), np.zeros(n_per_class)].astype(np.float32)
    keras.utils.set_random_seed(0)
    hypermodel = ClotHyperModel({backbone: _Space(image_size)}, weights="none", seed=0)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    if epochs:
        hypermodel.fit(hp, model, x, y, epochs=epochs, batch_size=16, shuffle=True, verbose=0)
    probs = model.predict(x, verbose=0)[:, 0]
    auc = float(roc_auc_score(y, probs))

    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = MlflowTracker(
        uri, experiment_name="serve-study", artifact_root=str(root / "artifacts"), tries=2, backoff_s=0.01
    )
    tracker.check_available()
    parent = tracker.start_study("serve-study", objective="val_auc", direction="maximize")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()
    tracker.log_study_inputs(
        config={"data": {"path": str(data), "synthetic": {}}},
        search_spaces={},
        manifest_path=None,
        dataset_digest=digest,
    )
    run_id = tracker.start_trial(0)
    # As a trial's run records them; its intervals are at 90% (the page must say so, not 95%).
    tracker.log_params(run_id, {"backbone": backbone, "image_size": image_size, "confidence_level": 0.9})
    metrics = {
        "val_auc": auc,
        "test_auc": auc,
        "test_auc_ci_low": max(0.0, auc - 0.1),
        "test_auc_ci_high": min(1.0, auc + 0.05),
        "threshold": 0.5,
    }
    predictions = pd.DataFrame(
        {
            "key": [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths],
            "label": y.astype(int),
            "probability": probs,
        }
    )
    tracker.log_evaluation(
        run_id,
        metrics=metrics,
        artifacts={"test_predictions.csv": predictions.to_csv(index=False)},
        figures={},
    )
    inference = keras.Model(model.inputs, model.outputs, name=model.name)
    model_file = root / "champion.keras"  # saved once: the ledger's sha256 is the logged file's
    inference.save(model_file)
    model_id = tracker.log_model(run_id, model_file, image_size=image_size, threshold=0.5)
    tracker.end_trial(run_id, "COMPLETE")
    tracker.end_study()
    storage = f"sqlite:///{root / 'optuna.db'}"
    study = optuna.create_study(study_name="serve-study", storage=storage, direction="maximize")
    trial = study.ask()
    record_ledger(
        study,
        trial,
        run_id=run_id,
        parent=parent,
        digest=digest,
        metrics=metrics,
        model_id=model_id,
        model_file=model_file,
        artifacts={"test_predictions.csv": predictions.to_csv(index=False)},
    )
    study.tell(trial, auc)
    promote(uri, "serve-study", ledger=TrialLedger(storage))
    tracker.client.log_text(run_id, MODEL_CARD, "model_card.md")
    return Champion(
        tracking_uri=uri, model_uri="models:/blood-clot-detector@champion", data=data, test_auc=auc
    )


@contextmanager
def running_app(app: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) for the block; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
