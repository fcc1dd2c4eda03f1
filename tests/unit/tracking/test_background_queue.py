"""The ordered background queue that carries tracking uploads."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from clot_hpo.tracking.background import BackgroundQueue


def test_calls_run_in_order_off_the_calling_thread() -> None:
    queue, seen = BackgroundQueue(), []
    for i in range(20):
        queue.submit(
            f"call {i}", lambda i=i: (time.sleep(0.001 * (i % 3)), seen.append((i, threading.get_ident())))
        )
    queue.close()
    assert [i for i, _ in seen] == list(range(20))
    assert {t for _, t in seen} != {threading.get_ident()}


def test_a_failing_call_is_reported_and_the_next_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    queue, seen = BackgroundQueue(), []

    def boom() -> None:
        raise ConnectionError("server went away")

    with caplog.at_level(logging.WARNING, logger="clot_hpo.tracking"):
        failed = queue.submit("log the model of trial 3", boom)
        queue.submit("next", seen.append, "ran")
        queue.close()
    assert failed.result() is None and seen == ["ran"]
    assert "could not log the model of trial 3: ConnectionError: server went away" in caplog.text


def test_results_come_back_through_the_future() -> None:
    queue = BackgroundQueue()
    assert queue.submit("add", lambda a, b: a + b, 2, b=3).result(timeout=5) == 5
    queue.close()


def test_flush_waits_and_reports_a_timeout() -> None:
    queue, release = BackgroundQueue(), threading.Event()
    queue.submit("wait", release.wait, 5)
    assert queue.pending == 1
    assert queue.flush(timeout=0.05) is False
    release.set()
    assert queue.flush(timeout=5) is True and queue.pending == 0
    queue.close()
