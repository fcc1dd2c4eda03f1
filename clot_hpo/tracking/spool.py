"""A trial's tracking, written to files by its process and forwarded by the study process.

The trial process never talks to the tracking backend: :class:`SpoolTracker` appends what a
trial logs (params, each epoch's metrics, the evaluation, its figures pickled, the model as a
``.keras`` file) to a folder, and the study process's :class:`SpoolReader` forwards it to
the real tracker, on a background thread, while the next trial trains. This keeps MLflow's
import (~1 s), its store's start-up (~1.5 s) and every upload off the critical path of each
trial; only the model's own ``.keras`` save stays in the trial process, which alone holds it.

The folder (``studies/<study>/trials/<n>/tracking/``)::

    events.jsonl        one JSON object per line: params, epoch, evaluation, model
    figures.<k>.pkl     the evaluation's matplotlib figures, pickled (removed once forwarded)
    model.keras         the trained model (removed once the tracker has stored it)

Figures travel pickled (~0.02 s) rather than as PNG files: rendering them (~0.7 s a trial)
then happens in the study process, off the trial's critical path.

A line is complete only with its newline, so a trial killed mid-write loses that line alone.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

from clot_hpo.tracking.base import TrialTracker, to_plain

log = logging.getLogger("clot_hpo.tracking")

EVENTS_FILE = "events.jsonl"
MODEL_FILE = "model.keras"


class SpoolTracker(TrialTracker):
    """The trial process's tracker: appends to a spool folder, never to a backend.

    ``run_id`` is ignored: the folder is the trial's, and the study process knows its run.
    """

    enabled = True

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _append(self, event: dict[str, Any]) -> None:
        line = json.dumps(to_plain(event), allow_nan=True) + "\n"
        # One write of a whole line: the study process reads the file while it grows.
        with open(self.folder / EVENTS_FILE, "a", encoding="utf-8") as fh:
            fh.write(line)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Record the trial's hyperparameters."""
        self._append({"event": "params", "params": params})

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
        """Record one epoch's metrics."""
        self._append(
            {"event": "epoch", "epoch": int(epoch), "metrics": {k: float(v) for k, v in metrics.items()}}
        )

    def log_evaluation(
        self,
        run_id: str,
        *,
        metrics: dict[str, float],
        artifacts: dict[str, Any],
        figures: dict[str, Any],
    ) -> None:
        """Record the evaluation; the figures are pickled (and closed) for the study process to draw."""
        import matplotlib.pyplot as plt

        event: dict[str, Any] = {"event": "evaluation", "metrics": metrics, "artifacts": artifacts}
        if figures:
            file = f"figures.{len(list(self.folder.glob('figures.*.pkl')))}.pkl"
            try:
                with open(self.folder / file, "wb") as fh:
                    pickle.dump(dict(figures), fh, protocol=pickle.HIGHEST_PROTOCOL)
                event["figures_file"] = file
            finally:
                for fig in figures.values():
                    plt.close(fig)
        self._append(event)

    def log_model(self, run_id: str, model: Any, *, image_size: int, threshold: float) -> bool:
        """Save the model as ``model.keras`` (atomically) and record how to log it."""
        partial = self.folder / f"{MODEL_FILE}.partial.keras"  # Keras insists on the suffix
        model.save(partial)
        os.replace(partial, self.folder / MODEL_FILE)
        self._append(
            {
                "event": "model",
                "file": MODEL_FILE,
                "image_size": int(image_size),
                "threshold": float(threshold),
            }
        )
        return True


def _load_figures(path: Path) -> dict[str, Any]:
    """Unpickle a trial's figures (its own process wrote them, with the same matplotlib)."""
    import matplotlib

    # Unpickled pyplot figures get a manager of this process's backend: never a GUI one on
    # the upload thread.
    matplotlib.use("Agg")
    try:
        with open(path, "rb") as fh:
            return dict(pickle.load(fh))  # noqa: S301 - written by our own trial process
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
        log.warning("tracking: could not read the figures in %s: %s", path, exc)
        return {}


class SpoolReader:
    """Forwards a spool folder's new events to a tracker, remembering how far it got."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.offset = 0  # bytes of events.jsonl already forwarded

    def _new_events(self) -> list[dict[str, Any]]:
        path = self.folder / EVENTS_FILE
        try:
            with open(path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        self.offset += len(complete)
        events = []
        for raw in complete.splitlines():
            try:
                events.append(json.loads(raw))
            except ValueError:
                log.warning("tracking: skipped an unreadable line of %s", path)
        return events

    def forward(self, tracker: TrialTracker, run_id: str) -> int:
        """Send the events written since the last call to ``tracker``; return how many.

        Epoch metrics of consecutive epochs go out one batch per epoch (the tracker batches
        each); a model file is removed once the tracker reports it stored.
        """
        events = self._new_events()
        for event in events:
            kind = event.get("event")
            if kind == "params":
                tracker.log_params(run_id, event["params"])
            elif kind == "epoch":
                tracker.log_epoch(run_id, int(event["epoch"]), event["metrics"])
            elif kind == "evaluation":
                figures_file = self.folder / event["figures_file"] if event.get("figures_file") else None
                tracker.log_evaluation(
                    run_id,
                    metrics=event["metrics"],
                    artifacts=event.get("artifacts", {}),
                    figures=_load_figures(figures_file) if figures_file else {},
                )
                if figures_file:
                    figures_file.unlink(missing_ok=True)
            elif kind == "model":
                file = self.folder / event["file"]
                stored = tracker.log_model(
                    run_id, file, image_size=int(event["image_size"]), threshold=float(event["threshold"])
                )
                if stored:
                    file.unlink(missing_ok=True)
                else:
                    log.warning("tracking: the model of run %s was not stored; it stays at %s", run_id, file)
            else:
                log.warning("tracking: skipped an unknown event %r in %s", kind, self.folder)
        return len(events)
