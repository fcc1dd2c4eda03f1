"""A trial's training state, saved after every epoch so a killed trial resumes where it stopped.

One file, ``checkpoint.npz`` in the trial's folder, holds everything the next epoch depends on:

* the model's variables: weights, BatchNormalization statistics and the seed generators'
  states (dropout masks and augmentation draws continue where they were);
* the optimizer's variables: its slots (momentum, Adam's moments), gradient accumulators and
  ``iterations``, the position of any learning-rate schedule;
* the epoch count, the per-epoch history of the metrics and a small JSON header.

The data order needs no state: :class:`clot_hpo.data.pipeline.EpochOrder` makes each epoch's
order a function of the trial's seed and the epoch, and :func:`epoch_checkpoint` tells it the
epoch. The file is written next to its final name and renamed over it (``os.replace``), so a
process killed mid-write leaves the previous checkpoint whole; only the last one is kept.

A checkpoint that cannot be read (truncated, another format, another model) is reported in one
log line and the trial starts from scratch: :func:`load_checkpoint` returns None. A checkpoint
may come from a tracking server that others write to, so nothing is decompressed before its
size is known and capped: the header's size from the zip directory (:data:`MAX_HEADER_BYTES`),
each array's from the zip directory and its ``.npy`` header (shape and dtype; no object
arrays), all of them within the caller's ``max_bytes``. A deflate bomb costs kilobytes.

Nothing here knows Optuna, MLflow or the search: the trial process wires it in. Keras is
imported only by :func:`epoch_checkpoint`, so the study process reads headers without it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("clot_hpo.checkpoint_file")

CHECKPOINT_FILE = "checkpoint.npz"
FORMAT_VERSION = 1
_HEADER = "header.json"
# The header holds the epoch, the per-epoch history and a few facts: far below this.
MAX_HEADER_BYTES = 4 << 20
# The largest .npy header NumPy writes is a few hundred bytes; read_array_header's own limit.
_MAX_NPY_HEADER = 10_000


class CheckpointTooLarge(ValueError):
    """A checkpoint member is larger than allowed, or says it is other than it is."""


class _HasEpoch(Protocol):
    epoch: int


@dataclass
class TrainingCheckpoint:
    """The state after ``epoch`` completed epochs (resume with ``initial_epoch=epoch``)."""

    epoch: int
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    history: dict[str, list[float]] = field(default_factory=dict)
    # Free-form JSON: the trial number, the seed, the parameters, who wrote it and when.
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: str | Path, checkpoint: TrainingCheckpoint, *, before_replace: Callable[[Path], None] | None = None
) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (a temporary file, then a rename).

    ``before_replace`` gets the complete temporary file before it replaces ``path``: whatever
    it records about the file (its sha256, in the trial's ledger) is recorded before the file
    can be found, so a kill at any moment leaves no checkpoint unrecorded.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "format": FORMAT_VERSION,
        "epoch": int(checkpoint.epoch),
        "n_model": len(checkpoint.model),
        "n_optimizer": len(checkpoint.optimizer),
        "history": checkpoint.history,
        "meta": checkpoint.meta,
        "written_at": time.time(),
    }
    arrays = {f"model_{i}": np.asarray(v) for i, v in enumerate(checkpoint.model)}
    arrays.update({f"optimizer_{i}": np.asarray(v) for i, v in enumerate(checkpoint.optimizer)})
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(partial, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub: allow_pickle's slot
    # The header rides in the same zip file, readable without NumPy (the study process reads it).
    with zipfile.ZipFile(partial, "a") as archive:
        archive.writestr(_HEADER, json.dumps(header, allow_nan=True))
    with open(partial, "rb+") as fh:
        os.fsync(fh.fileno())
    if before_replace is not None:
        before_replace(partial)
    os.replace(partial, path)
    return path


def _read_header(archive: zipfile.ZipFile) -> Any:
    """The header member, its size checked in the zip directory before it is decompressed.

    Raises:
        CheckpointTooLarge: the header is larger than :data:`MAX_HEADER_BYTES`.
        KeyError: there is no header.
    """
    info = archive.getinfo(_HEADER)
    if info.file_size > MAX_HEADER_BYTES:
        raise CheckpointTooLarge(
            f"its {_HEADER} is {info.file_size} bytes decompressed, over the {MAX_HEADER_BYTES} allowed"
        )
    with archive.open(info) as fh:
        # zipfile stops at the directory's size; reading one byte more proves it did.
        data = fh.read(MAX_HEADER_BYTES + 1)
    if len(data) > MAX_HEADER_BYTES:
        raise CheckpointTooLarge(f"its {_HEADER} is over the {MAX_HEADER_BYTES} bytes allowed")
    return json.loads(data)


def read_header(path: str | Path) -> dict[str, Any] | None:
    """A checkpoint's header (epoch, history, meta) without its arrays; None if unreadable.

    The header's size is capped before it is decompressed (:data:`MAX_HEADER_BYTES`).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            header = _read_header(archive)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        log.warning("checkpoint %s: its header cannot be read (%s)", path, exc)
        return None
    return header if isinstance(header, dict) and header.get("format") == FORMAT_VERSION else None


def _check_array_sizes(archive: zipfile.ZipFile, names: list[str], max_bytes: int | None) -> None:
    """Each array member's size, from the zip directory and its ``.npy`` header, before reading it.

    Raises:
        CheckpointTooLarge: a member is missing, holds objects, is not the size its header
            says, or the arrays together exceed ``max_bytes``.
    """
    total = 0
    for name in names:
        info = archive.getinfo(f"{name}.npy")
        with archive.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                    fh, max_header_size=_MAX_NPY_HEADER
                )
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                    fh, max_header_size=_MAX_NPY_HEADER
                )
            offset = fh.tell()
        if dtype.hasobject:
            raise CheckpointTooLarge(f"its member {info.filename} holds Python objects")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if info.file_size != offset + nbytes:
            raise CheckpointTooLarge(
                f"its member {info.filename} is {info.file_size} bytes in the zip directory, but its "
                f"header describes {offset + nbytes} ({shape} {dtype})"
            )
        total += nbytes
        if max_bytes is not None and total > max_bytes:
            raise CheckpointTooLarge(f"its arrays exceed the {max_bytes} bytes this model's state can take")


def load_checkpoint(path: str | Path, *, max_bytes: int | None = None) -> TrainingCheckpoint | None:
    """Read a checkpoint; None, with one warning line, when there is none or it cannot be read.

    Args:
        path: the checkpoint file.
        max_bytes: the most its arrays may hold together (the model's state and its
            optimizer's); checked from the zip directory and each ``.npy`` header before
            anything is decompressed. None: no limit on the total (each member's size is
            still checked against its header).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            header = _read_header(archive)
            if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
                found = header.get("format") if isinstance(header, dict) else header
                raise ValueError(f"format {found!r}, expected {FORMAT_VERSION}")
            names = [f"model_{i}" for i in range(int(header["n_model"]))]
            names += [f"optimizer_{i}" for i in range(int(header["n_optimizer"]))]
            _check_array_sizes(archive, names, max_bytes)
        with np.load(path, allow_pickle=False) as data:
            model = [data[f"model_{i}"] for i in range(int(header["n_model"]))]
            optimizer = [data[f"optimizer_{i}"] for i in range(int(header["n_optimizer"]))]
        history = {str(k): [float(x) for x in v] for k, v in dict(header.get("history") or {}).items()}
        return TrainingCheckpoint(
            epoch=int(header["epoch"]),
            model=model,
            optimizer=optimizer,
            history=history,
            meta=dict(header.get("meta") or {}),
        )
    except Exception as exc:  # noqa: BLE001 - any unreadable file means: start from scratch
        log.warning(
            "checkpoint %s cannot be read (%s: %s); starting from scratch", path, type(exc).__name__, exc
        )
        return None


def capture(
    model: Any, *, epoch: int, history: dict[str, list[float]], meta: dict[str, Any] | None = None
) -> TrainingCheckpoint:
    """The model's and its optimizer's state after ``epoch`` completed epochs."""
    optimizer = getattr(model, "optimizer", None)
    opt_vars = list(optimizer.variables) if optimizer is not None and optimizer.built else []
    return TrainingCheckpoint(
        epoch=int(epoch),
        model=[np.array(v) for v in model.variables],
        optimizer=[np.array(v) for v in opt_vars],
        history={k: list(v) for k, v in history.items()},
        meta=dict(meta or {}),
    )


def _shapes(values: list[Any]) -> list[tuple[int, ...]]:
    return [tuple(np.shape(v)) for v in values]


def restore_model(model: Any, checkpoint: TrainingCheckpoint) -> None:
    """Assign the checkpoint's variables to ``model`` (same architecture, same order).

    Raises:
        ValueError: the checkpoint was written by another architecture.
    """
    variables = list(model.variables)
    if _shapes(variables) != _shapes(checkpoint.model):
        raise ValueError(
            f"the checkpoint holds {len(checkpoint.model)} model variables of other shapes than the "
            f"model's {len(variables)}: written for another model"
        )
    for variable, value in zip(variables, checkpoint.model, strict=True):
        variable.assign(value)


def restore_optimizer(model: Any, checkpoint: TrainingCheckpoint) -> bool:
    """Build the model's optimizer (if needed) and assign the checkpoint's optimizer state.

    Returns False, leaving a fresh optimizer, when the saved state belongs to another set of
    trainable variables: the freeze schedule recompiles with a fresh optimizer when it
    unfreezes the base, so a checkpoint of the last frozen epoch resumes with a fresh one, as
    the uninterrupted trial did.
    """
    optimizer = model.optimizer
    if not checkpoint.optimizer:
        return False
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    variables = list(optimizer.variables)
    if _shapes(variables) != _shapes(checkpoint.optimizer):
        return False
    for variable, value in zip(variables, checkpoint.optimizer, strict=True):
        variable.assign(value)
    return True


def epoch_checkpoint(
    path: str | Path | None,
    *,
    resume: TrainingCheckpoint | None = None,
    order: _HasEpoch | None = None,
    meta: dict[str, Any] | None = None,
    on_written: Callable[[int, Path], None] | None = None,
) -> Any:
    """A Keras callback that restores ``resume`` when training begins and saves after every epoch.

    Put it first among the callbacks, so that the checkpoint is on disk before any later
    callback (reporting to a pruner, say) may stop the training.

    Args:
        path: the checkpoint file; None saves nothing (it then only restores and follows).
        resume: a checkpoint to restore at the start of the first ``fit`` call.
        order: the training data's epoch order (:class:`~clot_hpo.data.pipeline.EpochOrder`),
            told each epoch's number before its first batch.
        meta: JSON-able facts written into every checkpoint (trial number, seed, parameters).
        on_written: called with ``(epochs_done, file)`` for each checkpoint once it is written,
            before it replaces the previous one (:func:`save_checkpoint`'s ``before_replace``).

    Returns:
        The callback; its ``history`` holds every epoch's logs, the restored epochs first,
        and ``optimizer_restored`` says whether the optimizer state was restored.
    """
    return _callback_class()(path, resume=resume, order=order, meta=meta, on_written=on_written)


@functools.cache
def _callback_class() -> type:
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        def __init__(
            self,
            path: str | Path | None,
            *,
            resume: TrainingCheckpoint | None,
            order: _HasEpoch | None,
            meta: dict[str, Any] | None,
            on_written: Callable[[int, Path], None] | None,
        ) -> None:
            super().__init__()
            self.path = Path(path) if path is not None else None
            self.order = order
            self.meta = dict(meta or {})
            self.on_written = on_written
            self._pending = resume
            self.history: dict[str, list[float]] = {
                k: list(v) for k, v in (resume.history if resume else {}).items()
            }
            self.optimizer_restored: bool | None = None
            self.save_seconds = 0.0

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            checkpoint, self._pending = self._pending, None
            if checkpoint is None:
                return
            restore_model(self.model, checkpoint)
            self.optimizer_restored = restore_optimizer(self.model, checkpoint)
            if not self.optimizer_restored:
                log.info(
                    "checkpoint: the optimizer starts fresh at epoch %d (the schedule recompiled)",
                    checkpoint.epoch + 1,
                )

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self.order is not None:
                self.order.epoch = int(epoch)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            for key, value in (logs or {}).items():
                if np.isscalar(value) or np.ndim(value) == 0:
                    self.history.setdefault(str(key), []).append(float(value))
            if self.path is None:
                return
            started = time.perf_counter()
            state = capture(self.model, epoch=epoch + 1, history=self.history, meta=self.meta)
            written = self.on_written
            save_checkpoint(
                self.path,
                state,
                before_replace=None if written is None else functools.partial(written, epoch + 1),
            )
            self.save_seconds += time.perf_counter() - started

    return EpochCheckpoint


__all__ = [
    "CHECKPOINT_FILE",
    "MAX_HEADER_BYTES",
    "CheckpointTooLarge",
    "TrainingCheckpoint",
    "capture",
    "epoch_checkpoint",
    "load_checkpoint",
    "read_header",
    "restore_model",
    "restore_optimizer",
    "save_checkpoint",
]
