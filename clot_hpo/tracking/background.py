"""An ordered background queue: tracking uploads run while the next trial trains.

One worker thread runs the submitted calls in submission order, so a trial's forwarded
epochs, evaluation, model and end of run reach the tracker in that order, and the study
process's tracker is never called from two threads at once by the queue itself.
"""

from __future__ import annotations

import logging
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
