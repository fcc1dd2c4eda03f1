"""A checkpoint from a tracking server others write to: sizes are capped before anything is decompressed.

Each bomb is a real deflate stream of 256 MiB of zeros (about 250 KB on disk), written in
blocks so the test itself stays small. Reading it must cost kilobytes, measured with
``tracemalloc`` (NumPy and zlib's outputs are Python allocations it sees).
"""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clot_hpo import checkpoint_file as checkpoint
from clot_hpo.checkpoint_file import (
    CHECKPOINT_FILE,
    TrainingCheckpoint,
    load_checkpoint,
    read_header,
    save_checkpoint,
)

BOMB_BYTES = 256 << 20
# What reading a refused bomb may cost: far below the bomb, a little above zipfile's buffers.
BUDGET_BYTES = 4 << 20


def _zeros(fh: Any, n: int) -> None:
    block = bytes(1 << 20)
    for _ in range(n // len(block)):
        fh.write(block)


def _header(n_model: int = 1) -> bytes:
    header = {"format": 1, "epoch": 1, "n_model": n_model, "n_optimizer": 0, "history": {}, "meta": {}}
    return json.dumps(header).encode()


def _peak(read: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = read()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_header_bomb_costs_kilobytes(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("header.json", "w", force_zip64=True) as fh,
    ):
        fh.write(b'{"format": 1, "pad": "')
        _zeros(fh, BOMB_BYTES)
    assert path.stat().st_size < 2 << 20
    header, peak = _peak(lambda: read_header(path))
    assert header is None and peak < BUDGET_BYTES
    loaded, peak = _peak(lambda: load_checkpoint(path))
    assert loaded is None and peak < BUDGET_BYTES


def test_an_array_bomb_costs_kilobytes(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    shape = (BOMB_BYTES // 4,)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("model_0.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
            _zeros(fh, BOMB_BYTES)
        archive.writestr("header.json", _header())
    assert path.stat().st_size < 2 << 20
    # Capped by what the model's state can take (the trial passes its model's size).
    loaded, peak = _peak(lambda: load_checkpoint(path, max_bytes=1 << 20))
    assert loaded is None and peak < BUDGET_BYTES


def test_a_member_larger_than_its_array_header_says_is_refused(tmp_path: Path) -> None:
    # The .npy header claims 4 bytes; the member decompresses to 256 MiB: no total cap needed.
    path = tmp_path / CHECKPOINT_FILE
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("model_0.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (1,)})
            _zeros(fh, BOMB_BYTES)
        archive.writestr("header.json", _header())
    loaded, peak = _peak(lambda: load_checkpoint(path))
    assert loaded is None and peak < BUDGET_BYTES


def test_object_arrays_are_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model_0.npy", buffer.getvalue())
        archive.writestr("header.json", _header())
    assert load_checkpoint(path) is None


@pytest.mark.parametrize("max_bytes", [None, 8 * 3])
def test_a_checkpoint_within_its_caps_loads(tmp_path: Path, max_bytes: int | None) -> None:
    path = save_checkpoint(
        tmp_path / CHECKPOINT_FILE,
        TrainingCheckpoint(epoch=2, model=[np.arange(3.0)], optimizer=[], history={"loss": [1.0, 0.5]}),
    )
    loaded = load_checkpoint(path, max_bytes=max_bytes)
    assert loaded is not None and loaded.model[0].tolist() == [0.0, 1.0, 2.0]
    assert load_checkpoint(path, max_bytes=8 * 3 - 1) is None  # one byte short of its array
    assert checkpoint.MAX_HEADER_BYTES >= 1 << 20  # a long history fits
