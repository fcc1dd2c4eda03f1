"""A trial's tracking, written to files by its process and forwarded by the study process.

The trial process never talks to the tracking backend: :class:`SpoolTracker` appends what a
trial logs (params, each epoch's metrics, the evaluation, its figures as PNG files, the model
as a ``.keras`` file) to a folder, and the study process's :class:`SpoolReader` forwards it to
the real tracker, on a background thread, while the next trial trains. This keeps MLflow's
import (~1 s), its store's start-up (~1.5 s) and every upload off the critical path of each
trial; only the model's own ``.keras`` save stays in the trial process, which alone holds it.

The folder (``studies/<study>/trials/<n>/tracking-<attempt>-<token>/``), fresh for each
trial and attempt (:meth:`SpoolReader.fresh`), so that a folder left by an older study of
the same name is never read again::

    events.jsonl        one JSON object per line: params, epoch, evaluation, model
    figure-<k>.png      the evaluation's figures, rendered (removed once forwarded)
    model.keras         the trained model (removed once the tracker has stored it)

The spool is data, not code: figures travel as PNG files, never pickled (unpickling runs
whatever the file says). Without a GPU the evaluation's figures are drawn after the trial's
outcome is written, so their rendering stays off the study's critical path. Events name their files by
bare name inside the spool folder; an absolute path, ``..``, a sub-folder or a symbolic link
is refused and logged, as is a file that is missing.

A line is complete only with its newline, so a trial killed mid-write loses that line alone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clot_hpo.tracking.base import TrialTracker, as_figure, to_plain

log = logging.getLogger("clot_hpo.tracking")

EVENTS_FILE = "events.jsonl"
MODEL_FILE = "model.keras"
FIGURE_PREFIX = "figure-"
# A file an event may name: one path component, no leading dot (so neither "." nor "..").
_BARE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,200}")
# A figure's artifact name in the run: relative, "/"-separated bare names.
_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,200}(/[A-Za-z0-9_][A-Za-z0-9_.+-]{0,200})*")


class SpoolTracker(TrialTracker):
    """The trial process's tracker: appends to a spool folder, never to a backend.

    ``run_id`` and ``step`` are ignored: the folder is the trial's, the study process knows
    its run, and its reader knows the evaluation's step (it forwarded the epochs).
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
        step: int = 0,
    ) -> None:
        """Record the evaluation; each figure is saved as a PNG file (and closed)."""
        import matplotlib.pyplot as plt

        event: dict[str, Any] = {"event": "evaluation", "metrics": metrics, "artifacts": artifacts}
        files: dict[str, str] = {}
        try:
            start = len(list(self.folder.glob(f"{FIGURE_PREFIX}*.png")))
            for k, (name, obj) in enumerate(figures.items(), start=start):
                file = f"{FIGURE_PREFIX}{k}.png"
                # The resolution MLflow's log_figure uses (matplotlib's default).
                as_figure(obj).savefig(self.folder / file, format="png")
                files[str(name)] = file
        finally:
            for obj in figures.values():
                plt.close(as_figure(obj))
        if files:
            event["figures"] = files
        self._append(event)

    def log_model(
        self,
        run_id: str,
        model: Any,
        *,
        image_size: int,
        threshold: float,
        step: int = 0,
        dicom: dict[str, Any] | None = None,
    ) -> str | None:
        """Save the model as ``model.keras`` (atomically) and record how to log it.

        ``model`` is a Keras model, or the ``.keras`` file of one (copied byte for byte: the
        trial records that file's sha256 in the Optuna storage before it is spooled).
        """
        partial = self.folder / f"{MODEL_FILE}.partial.keras"  # Keras insists on the suffix
        if isinstance(model, (str, Path)):
            shutil.copyfile(model, partial)
        else:
            model.save(partial)
        os.replace(partial, self.folder / MODEL_FILE)
        self._append(
            {
                "event": "model",
                "file": MODEL_FILE,
                "image_size": int(image_size),
                "threshold": float(threshold),
                "dicom": dicom,
            }
        )
        return MODEL_FILE


def spool_file(folder: Path, name: Any) -> Path | None:
    """The file ``name`` of an event, if it is a bare name of a regular file in ``folder``.

    Anything else (an absolute path, ``..``, a sub-folder, a symbolic link, a missing file) is
    refused with an error in the log: the spool's writer is another process, and the study
    process must upload or delete nothing outside the trial's own folder.
    """
    if not isinstance(name, str) or not _BARE_NAME.fullmatch(name):
        log.error(
            "tracking: refused the file %r named in %s: spool events name files by bare name "
            "inside the spool folder",
            name,
            folder,
        )
        return None
    path = folder / name
    if path.is_symlink():
        log.error("tracking: refused %s: a symbolic link in a spool folder is never followed", path)
        return None
    if not path.is_file():
        log.error("tracking: %s, named in the trial's spool, is missing; it is not uploaded", path)
        return None
    return path


def _figure_files(folder: Path, named: Any) -> dict[str, Path]:
    """The evaluation's figures: artifact name -> PNG file, each checked by :func:`spool_file`."""
    if not isinstance(named, dict):
        if named is not None:
            log.error("tracking: refused the figures %r in %s: not a name -> file mapping", named, folder)
        return {}
    out = {}
    for name, file in named.items():
        if not isinstance(name, str) or not _ARTIFACT_NAME.fullmatch(name):
            log.error(
                "tracking: refused the figure name %r in %s: not a relative artifact path", name, folder
            )
            continue
        path = spool_file(folder, file)
        if path is not None and path.name.startswith(FIGURE_PREFIX) and path.suffix == ".png":
            out[name] = path
        elif path is not None:
            log.error("tracking: refused %s as a figure: figures are %s<k>.png files", path, FIGURE_PREFIX)
    return out


class SpoolReader:
    """Forwards a trial's spool folders' new events to a tracker, remembering how far it got.

    A trial's attempts (the retry after running out of memory) each write into a fresh folder
    of their own (:meth:`new_attempt`); the reader forwards them in order.

    The reader forwards every epoch of the trial (a resumed trial's process spools the epochs
    its checkpoint holds first), so it knows the evaluation's step: one past the last epoch.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folders = [Path(folder)]
        self.offsets = [0]  # bytes of each folder's events.jsonl already forwarded
        self._refused: set[Path] = set()
        # One past the highest epoch forwarded: the step of the evaluation and of the model.
        self.evaluation_step = 0

    @property
    def folder(self) -> Path:
        """The folder the trial's current attempt writes into."""
        return self.folders[-1]

    @staticmethod
    def _create(parent: Path, attempt: int) -> Path:
        # A random part: trial numbers (and storage ids) restart with a fresh study of the same
        # name, and an old folder must never be read as this trial's.
        parent.mkdir(parents=True, exist_ok=True)
        folder = parent / f"tracking-{attempt}-{secrets.token_hex(6)}"
        folder.mkdir(mode=0o700)  # fails if it exists: the folder is this reader's alone
        return folder

    @classmethod
    def fresh(cls, parent: str | Path) -> SpoolReader:
        """A reader of a new, empty spool folder under ``parent`` (a trial's folder)."""
        return cls(cls._create(Path(parent), 0))

    def new_attempt(self) -> Path:
        """A new, empty folder for the trial's next attempt; the reader follows it."""
        folder = self._create(self.folder.parent, len(self.folders))
        self.folders.append(folder)
        self.offsets.append(0)
        return folder

    def _new_events(self, index: int) -> list[dict[str, Any]]:
        path = self.folders[index] / EVENTS_FILE
        if path.is_symlink():
            if path not in self._refused:  # said once
                self._refused.add(path)
                log.error("tracking: refused %s: a symbolic link in a spool folder is never followed", path)
            return []
        try:
            with open(path, "rb") as fh:
                fh.seek(self.offsets[index])
                data = fh.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        self.offsets[index] += len(complete)
        events = []
        for raw in complete.splitlines():
            try:
                event = json.loads(raw)
            except ValueError:
                log.warning("tracking: skipped an unreadable line of %s", path)
                continue
            if isinstance(event, dict):
                events.append(event)
            else:
                log.warning("tracking: skipped a line of %s that is not an event object", path)
        return events

    def forward(
        self, tracker: TrialTracker, run_id: str, on_model: Callable[[str], None] | None = None
    ) -> int:
        """Send the events written since the last call to ``tracker``; return how many.

        Epoch metrics of consecutive epochs go out one batch per epoch (the tracker batches
        each); a model file is removed once the tracker reports it stored, and ``on_model``
        gets the stored model's id.
        """
        count = 0
        for index, folder in enumerate(self.folders):
            events = self._new_events(index)
            for event in events:
                try:
                    self._forward_one(tracker, run_id, folder, event, on_model)
                except (KeyError, TypeError, ValueError) as exc:
                    log.error(
                        "tracking: skipped a malformed %r event in %s: %s", event.get("event"), folder, exc
                    )
            count += len(events)
        return count

    def _forward_one(
        self,
        tracker: TrialTracker,
        run_id: str,
        folder: Path,
        event: dict[str, Any],
        on_model: Callable[[str], None] | None = None,
    ) -> None:
        kind = event.get("event")
        if kind == "params":
            tracker.log_params(run_id, dict(event["params"]))
        elif kind == "epoch":
            epoch = int(event["epoch"])
            tracker.log_epoch(run_id, epoch, dict(event["metrics"]))
            self.evaluation_step = max(self.evaluation_step, epoch + 1)
        elif kind == "evaluation":
            figures = _figure_files(folder, event.get("figures"))
            tracker.log_evaluation(
                run_id,
                metrics=dict(event["metrics"]),
                artifacts=dict(event.get("artifacts", {})),
                figures=dict(figures),
                step=self.evaluation_step,
            )
            for png in figures.values():
                png.unlink(missing_ok=True)
        elif kind == "model":
            file = spool_file(folder, event["file"])
            if file is None:
                return
            stored = tracker.log_model(
                run_id,
                file,
                image_size=int(event["image_size"]),
                threshold=float(event["threshold"]),
                step=self.evaluation_step,
                dicom=event.get("dicom"),  # absent from a spool written before it was recorded
            )
            if stored:
                file.unlink(missing_ok=True)
                if on_model is not None:
                    on_model(stored)
            else:
                log.warning("tracking: the model of run %s was not stored; it stays at %s", run_id, file)
        else:
            log.warning("tracking: skipped an unknown event %r in %s", kind, folder)
