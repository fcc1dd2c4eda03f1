"""Start several processes' racing step at one instant, as soon as every one of them has imported.

A race test starts its processes, lets each import what it needs, then lets them all go at
the same moment. A fixed start time (``now + 20 s``) must cover the slowest imports on the
busiest machine and is waited for in full on a quiet one; this barrier waits only as long as
the imports take. The child side is Python source (``CHILD``) to paste into a ``python -c``
script, so the child needs nothing from ``tests/`` on its path.

Child: ``start_at = wait_for_go(folder, name)`` (announces ``name`` ready, returns the common
start time once the parent gave it). Parent: ``release(folder, n, procs)`` once ``n`` children
of that folder are ready.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

# Seconds between the release and the common start: every child polls every 10 ms, so each
# has read the start time well before it comes, even on a loaded machine.
LEAD_S = 0.5

CHILD = r"""
def wait_for_go(folder, name):
    import os, time
    open(os.path.join(folder, name + ".ready"), "w").close()
    go = os.path.join(folder, "go")
    while not os.path.exists(go):
        time.sleep(0.01)
    with open(go) as f:
        start_at = float(f.read())
    time.sleep(max(0.0, start_at - time.time()))
    return start_at
"""


def release(folder: Path, n: int, procs: Sequence[subprocess.Popen[str]], timeout: float = 180.0) -> float:
    """Wait until ``n`` children announced themselves ready in ``folder``; give them a start time.

    Fails when a child exits before it is ready (with its output) or when ``timeout`` passes.
    """
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("*.ready"))) < n:
        for proc in procs:
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"a process exited {proc.returncode} before the start:\n{out}\n{err}")
        if time.monotonic() > deadline:
            ready = len(list(folder.glob("*.ready")))
            raise AssertionError(f"{ready} of {n} processes ready after {timeout:.0f} s")
        time.sleep(0.05)
    start_at = time.time() + LEAD_S
    staged = folder / "go.tmp"
    staged.write_text(repr(start_at))
    staged.rename(folder / "go")  # atomic: a child never reads a half-written time
    return start_at
