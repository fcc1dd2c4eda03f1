"""An ordered background queue: tracking uploads run while the next trial trains.

One worker thread runs the submitted calls in submission order, so a trial's forwarded
epochs, evaluation, model and end of run reach the tracker in that order, and the study
process's tracker is never called from two threads at once by the queue itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any

log = logging.getLogger("clot_hpo.tracking")


class BackgroundQueue:
    """Runs calls one at a time, in order, on a worker thread; failures are reported, not raised.

    Args:
        name: the worker thread's name prefix.
    """

    def __init__(self, name: str = "clot-hpo-tracking") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._futures: list[Future[Any]] = []

    def submit(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue ``fn(*args, **kwargs)``; an exception is logged as a warning naming ``what``."""

        def guarded() -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a failed upload must never stop the study
                log.warning("tracking: could not %s: %s: %s", what, type(exc).__name__, exc)
                log.debug("tracking: %s failed", what, exc_info=True)
                return None

        future = self._pool.submit(guarded)
        self._futures = [f for f in self._futures if not f.done()] + [future]
        return future

    @property
    def pending(self) -> int:
        """Calls queued or running."""
        return sum(not f.done() for f in self._futures)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued call has run; return False when ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            futures = [f for f in self._futures if not f.done()]
            if not futures:
                return True
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            _, not_done = wait_futures(futures, timeout=left)
            if not_done and deadline is not None and time.monotonic() >= deadline:
                return False

    def close(self) -> None:
        """Run what is queued, then stop the worker thread."""
        self.flush()
        self._pool.shutdown(wait=True)


class LatestOnly:
    """Runs at most one call at a time on its own thread; a newer call replaces one still waiting.

    For uploads where only the newest matters (a trial's checkpoint after every epoch): while
    one upload runs, the next waits, and each newer one replaces it; ``on_drop`` is called with
    the arguments of every replaced call (to delete its snapshot, say). Failures are logged.

    Args:
        name: the worker thread's name prefix.
        on_drop: called with a replaced call's positional arguments.
    """

    def __init__(self, name: str = "clot-hpo-latest", on_drop: Callable[..., None] | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._waiting: tuple[str, Callable[..., Any], tuple[Any, ...]] | None = None
        self._running: Future[Any] | None = None
        self._on_drop = on_drop
        self.done = 0
        self.dropped = 0

    def submit(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` after the call now running; replaces a call still waiting."""
        with self._lock:
            if self._waiting is not None:
                self._drop(self._waiting[2])
            self._waiting = (what, fn, args)
            if self._running is None or self._running.done():
                self._running = self._pool.submit(self._drain)

    def _drop(self, args: tuple[Any, ...]) -> None:
        self.dropped += 1
        if self._on_drop is not None:
            try:
                self._on_drop(*args)
            except Exception as exc:  # noqa: BLE001 - cleanup only
                log.debug("tracking: cleanup of a replaced call failed: %s", exc)

    def _drain(self) -> None:
        while True:
            with self._lock:
                job, self._waiting = self._waiting, None
            if job is None:
                return
            what, fn, args = job
            try:
                fn(*args)
                self.done += 1
            except Exception as exc:  # noqa: BLE001 - a failed upload must never stop the study
                log.warning("tracking: could not %s: %s: %s", what, type(exc).__name__, exc)

    @property
    def pending(self) -> bool:
        """Whether a call is running or waiting."""
        with self._lock:
            return self._waiting is not None or (self._running is not None and not self._running.done())

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the running and waiting calls are done; False when ``timeout`` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Finish what is queued (up to ``timeout``), then stop the thread."""
        self.flush(timeout)
        self._pool.shutdown(wait=timeout is None)
