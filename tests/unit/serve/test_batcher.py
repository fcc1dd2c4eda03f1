"""The batcher merges waiting requests into one call and hands each its own rows back."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from clot_hpo.serve.service import Batcher


def test_concurrent_requests_share_calls_and_get_their_own_rows() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def double(x: np.ndarray) -> tuple[np.ndarray, ...]:
        gate.wait(5)  # the first call holds the worker while the others queue up
        sizes.append(len(x))
        return x * 2, x.sum(axis=1)

    batcher = Batcher(double, max_batch=32)
    inputs = [np.full((k % 3 + 1, 2), float(k)) for k in range(10)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(batcher, x) for x in inputs]
        threading.Timer(0.3, gate.set).start()
        results = [f.result(timeout=10) for f in futures]
    for x, (doubled, sums) in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(doubled, x * 2)
        np.testing.assert_array_equal(sums, x.sum(axis=1))
    assert sum(sizes) == sum(len(x) for x in inputs)
    assert len(sizes) < len(inputs)  # some requests were merged


def test_a_failing_call_fails_its_requests_and_the_worker_goes_on() -> None:
    def fail_on_negative(x: np.ndarray) -> tuple[np.ndarray, ...]:
        if (x < 0).any():
            raise ValueError("negative input")
        return (x,)

    batcher = Batcher(fail_on_negative)
    with pytest.raises(ValueError, match="negative input"):
        batcher(np.array([[-1.0]]))
    (out,) = batcher(np.array([[1.0]]))
    assert out.tolist() == [[1.0]]
