"""The served model: loaded once through the registry, with what the page says about it.

:class:`ModelService` holds the Keras model, its Grad-CAM and its metadata (name, version,
alias, backbone, input size, threshold, the metric catalogue's headline metrics on the test split
with their intervals, model card). Both the
forward pass and Grad-CAM are traced once at load (a warm-up call), so the first request
costs what every other one does. A model Grad-CAM cannot explain (no 4-D feature map) is
served all the same: predictions work, and the page says why there is no overlay.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clot_hpo.data.dicom import DicomSettings
from clot_hpo.explain import GradCam, overlay, png_bytes
from clot_hpo.registry.models import load_keras_model, resolve_model
from clot_hpo.serve.images import DecodedImage
from clot_hpo.tracking.store import MlflowException, open_client
from clot_hpo.tracking.tags import PARAM_CONFIDENCE_LEVEL, TAG_TRIAL_NUMBER
from clot_hpo.util import finite_float, first_line

log = logging.getLogger("clot_hpo.serve")

MODEL_CARD_ARTIFACT = "model_card.md"  # on the version's run, when the report wrote one
_ALIAS = re.compile(r"^models:/[^/@]+@(?P<alias>[^/]+)/?$")


class ExplanationsUnavailable(RuntimeError):
    """``/api/explain`` for a model Grad-CAM cannot explain; the message says why."""


class Batcher:
    """Runs ``fn`` on one thread, merging the batches of requests that wait into one call.

    Concurrent requests each calling the model would split two CPU cores between them and
    pay the per-call overhead each time; here a request that arrives while the model is
    busy joins the next call. Nothing waits for company: an idle server answers at once.

    Args:
        fn: ``(N, ...) array -> tuple of (N, ...) arrays``.
        max_batch: most images per call.
    """

    def __init__(self, fn: Callable[[np.ndarray], tuple[np.ndarray, ...]], *, max_batch: int = 32) -> None:
        self._fn = fn
        self._max_batch = max_batch
        self._queue: queue.Queue[tuple[np.ndarray, Future[tuple[np.ndarray, ...]]]] = queue.Queue()
        threading.Thread(target=self._loop, name="clot-hpo-batcher", daemon=True).start()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """``fn(batch)``, computed together with whatever else is waiting."""
        future: Future[tuple[np.ndarray, ...]] = Future()
        self._queue.put((batch, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            items = [self._queue.get()]
            size = len(items[0][0])
            while size < self._max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                size += len(items[-1][0])
            try:
                outputs = self._fn(np.concatenate([batch for batch, _ in items]))
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, future in items:
                    future.set_exception(exc)
                continue
            start = 0
            for batch, future in items:
                future.set_result(tuple(out[start : start + len(batch)] for out in outputs))
                start += len(batch)


@dataclass
class ModelInfo:
    """What the page and ``GET /api/model`` say about the served model."""

    uri: str
    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None
    backbone: str | None
    image_size: int
    threshold: float
    # Kept by name for clients of /api/model (docs/serve.md); the page reads `metrics`.
    test_auc: float | None
    test_auc_ci_low: float | None
    test_auc_ci_high: float | None
    trial: str | None
    has_model_card: bool
    # Why /api/explain cannot answer for this model (None: it can).
    explanations_unavailable: str | None = None
    # The catalogue's headline metrics on the test split, as the page lists them (page_metrics).
    metrics: list[dict[str, Any]] = field(default_factory=list)
    # The data.dicom settings the model was trained with (None: not stored with it).
    dicom: DicomSettings | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass
class Scored:
    """One image scored: probability, decision, time spent on it."""

    filename: str
    probability: float
    label: int
    ms: float


class ModelService:
    """A loaded model: probabilities and Grad-CAM overlays of decoded images.

    Args:
        model: the Keras model (raw [0, 255] float32 pixels in, probability out).
        info: its metadata.
        model_card: the model card's Markdown, when there is one.
    """

    def __init__(self, model: Any, info: ModelInfo, model_card: str | None = None) -> None:
        import tensorflow as tf

        self.model = model
        self.info = info
        self.model_card = model_card
        size = info.image_size
        try:
            self.cam: GradCam | None = GradCam(model)
        except ValueError as exc:  # no 4-D feature map: predictions only, and the page says why
            self.cam = None
            info.explanations_unavailable = f"no Grad-CAM overlay for this model: {exc}"
            log.warning("%s", info.explanations_unavailable)
        spec = tf.TensorSpec((None, size, size, 3), tf.float32)
        # One traced graph for every batch size: Keras' predict() costs tens of ms per call.
        forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        self._forward = Batcher(lambda x: (np.asarray(forward(x), dtype=np.float64),))
        cam = self.cam
        self._cam = Batcher(cam) if cam is not None else None
        blank = np.zeros((1, size, size, 3), np.float32)
        self.probabilities(blank)  # warm-up: trace both graphs before the first request
        if self._cam is not None:
            self._cam(blank)

    @property
    def threshold(self) -> float:
        """The model's validated decision threshold (``p >= threshold`` is a clot)."""
        return self.info.threshold

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Positive-class probabilities of ``(N, S, S, 3)`` raw float32 pixels."""
        (out,) = self._forward(np.asarray(batch, dtype=np.float32))
        return out.reshape(len(batch), -1)[:, 0]

    def score(self, images: list[DecodedImage], decode_ms: list[float]) -> list[Scored]:
        """Score decoded images in one batch; each one's time is its decode plus its share of the batch."""
        start = time.perf_counter()
        probs = self.probabilities(np.stack([image.model_input for image in images]))
        share = (time.perf_counter() - start) * 1000 / len(images)
        return [
            Scored(image.filename, float(p), int(p >= self.threshold), round(ms + share, 2))
            for image, p, ms in zip(images, probs, decode_ms, strict=True)
        ]

    def explain(self, image: DecodedImage) -> tuple[bytes, float]:
        """The Grad-CAM overlay of one image (decoded with ``display=True``) as PNG, and its probability.

        Raises:
            ExplanationsUnavailable: the model has no map to explain (``info.explanations_unavailable``).
        """
        if self._cam is None or image.display is None:
            raise ExplanationsUnavailable(self.info.explanations_unavailable or "no picture to overlay")
        probs, maps = self._cam(image.model_input[None])
        return png_bytes(overlay(image.display, maps[0])), float(probs[0])


# An absolute path in text: file:// URIs, POSIX paths (a "/" at the start of a word, so
# URLs' paths, `models:/...` and markup such as </b> are left alone) and Windows drive paths.
_ABSOLUTE_PATH = re.compile(
    r"file://[^\s`'\"<>)]*|(?<![^\s`'\"(=\[])/[^\s`'\"<>)|]+|\b[A-Za-z]:\\[^\s`'\"<>)|]+",
    re.MULTILINE,
)


def without_absolute_paths(text: str) -> str:
    """``text`` with each absolute path cut to its last part (``/home/ana/scans/clots`` -> ``.../clots``).

    The model card names the data folder the model was trained on; a page anyone on the
    network may open must not tell them where it lies on the training machine.
    """

    def last_part(match: re.Match[str]) -> str:
        path = match.group(0).rstrip(".,;:")
        tail = match.group(0)[len(path) :]
        name = re.split(r"[/\\]", path.rstrip("/\\"))[-1]
        return f".../{name}{tail}" if name else f"...{tail}"

    return _ABSOLUTE_PATH.sub(last_part, text)


def page_metrics(metrics: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The metric catalogue's headline metrics on the test split, each with its interval, for the page.

    Each: ``name``, ``label`` (``Test AUC``), ``value``, ``ci_low``, ``ci_high`` (None when the
    run did not log it, or the metric has no interval) and ``ci_level`` (the run's
    ``confidence_level`` parameter; None when it was not logged).
    """
    # Imported here: the catalogue's package loads SciPy and scikit-learn (its metrics), which `serve`'s
    # import need not pay for (load_service loads Keras anyway).
    from clot_hpo.evaluate.catalogue import CI_HIGH, CI_LOW, all_metrics

    level = finite_float((params or {}).get(PARAM_CONFIDENCE_LEVEL))
    out = []
    for metric in all_metrics():
        if not metric.headline:
            continue
        key = metric.key("test")
        out.append(
            {
                "name": metric.name,
                "label": f"Test {metric.label}",
                "value": finite_float(metrics.get(key)),
                "ci_low": finite_float(metrics.get(key + CI_LOW)),
                "ci_high": finite_float(metrics.get(key + CI_HIGH)),
                "ci_level": level,
            }
        )
    return out


def _run_details(client: Any, run_id: str | None) -> tuple[dict[str, Any], str | None]:
    """Backbone, headline test metrics with intervals, trial number of the model's run; its model card."""
    if not run_id:
        return {}, None
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        log.warning(
            "the model's run %s cannot be read (%s): the page shows less about it", run_id, first_line(exc)
        )
        return {}, None
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    details = {
        "backbone": params.get("backbone"),
        "test_auc": finite_float(metrics.get("test_auc")),
        "test_auc_ci_low": finite_float(metrics.get("test_auc_ci_low")),
        "test_auc_ci_high": finite_float(metrics.get("test_auc_ci_high")),
        "trial": tags.get(TAG_TRIAL_NUMBER),
        "metrics": page_metrics(metrics, params),
    }
    card = None
    try:
        names = {item.path for item in client.list_artifacts(run_id)}
        if MODEL_CARD_ARTIFACT in names:
            card = client.download_artifacts(run_id, MODEL_CARD_ARTIFACT)
    except (MlflowException, OSError) as exc:
        log.warning("the model card of run %s cannot be read (%s)", run_id, first_line(exc))
    text = Path(card).read_text(encoding="utf-8", errors="replace") if card else None
    return details, without_absolute_paths(text) if text is not None else None


def load_service(tracking_uri: str, model_uri: str) -> ModelService:
    """Resolve ``model_uri`` through the registry, load it once, read its metadata.

    Raises:
        ConfigError: the model URI cannot be resolved (the registry's message says why).
    """
    client = open_client(tracking_uri)
    resolved = resolve_model(client, tracking_uri, model_uri)
    model = load_keras_model(tracking_uri, resolved)
    details, card = _run_details(client, resolved.run_id)
    alias = _ALIAS.match(model_uri)
    info = ModelInfo(
        uri=model_uri,
        name=resolved.name,
        version=resolved.version,
        alias=alias["alias"] if alias else None,
        run_id=resolved.run_id,
        backbone=details.get("backbone"),
        image_size=resolved.image_size,
        threshold=resolved.threshold,
        test_auc=details.get("test_auc"),
        test_auc_ci_low=details.get("test_auc_ci_low"),
        test_auc_ci_high=details.get("test_auc_ci_high"),
        trial=details.get("trial"),
        has_model_card=card is not None,
        metrics=details.get("metrics", []),
        dicom=resolved.dicom,
    )
    return ModelService(model, info, card)


__all__ = [
    "MODEL_CARD_ARTIFACT",
    "Batcher",
    "ExplanationsUnavailable",
    "ModelInfo",
    "ModelService",
    "Scored",
    "load_service",
    "page_metrics",
    "without_absolute_paths",
]
