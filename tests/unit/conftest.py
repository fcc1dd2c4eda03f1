"""The unit tests' rule, enforced: no subprocess, no process, no listening socket.

A unit test that starts a program (``subprocess``, ``os.fork``, ``os.system``, a
``multiprocessing`` process) or listens on a socket fails, naming the call and where it came
from: such a test belongs in ``tests/integration/`` (tests/README.md). Only calls made by the
project's own code (``clot_hpo/``, ``tests/``) count: a library may still run a helper of its own,
as MLflow reads the git commit of a run through GitPython's ``git`` process.

Listening is refused whoever asks (uvicorn, a ``socketserver``): a unit test serves nothing.
Binding without listening (``free_port``) is allowed.
"""

from __future__ import annotations

import inspect
import multiprocessing.process
import os
import socket
import subprocess
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from clot_hpo.tracking.source import git_commit

REPO = Path(__file__).resolve().parents[2]
_OWN_CODE = (str(REPO / "clot_hpo"), str(REPO / "tests"))
# Installed libraries (a venv's platstdlib is its lib/python3.X, which holds site-packages too).
_LIBRARIES = tuple({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
_HERE = str(Path(__file__).resolve())
RULE = "a unit test starts no subprocess and no server: move it to tests/integration/ (tests/README.md)"


# The checkout's git commit, which every tracked run records, is read by a `git` process once
# per interpreter (cached): read it now, at collection, so no unit test is charged with it.
git_commit()


class PyramidViolation(AssertionError):
    """A unit test started a process or a server."""


def _caller(frame: FrameType | None) -> str | None:
    """``file:line`` of the nearest caller in the project's code, unless a library came first.

    The standard library (``subprocess.run``, ``multiprocessing``) is looked through; None when
    an installed library is nearer (its own helper process is its business).
    """
    while frame is not None:
        name = frame.f_code.co_filename
        if name != _HERE and name.startswith(_OWN_CODE):
            return f"{name}:{frame.f_lineno}"
        if name.startswith(_LIBRARIES):
            return None
        frame = frame.f_back
    return None


def _guarded(what: str, original: Callable[..., Any], found: list[str], *, always: bool = False) -> Any:
    def guard(*args: Any, **kwargs: Any) -> Any:
        frame = inspect.currentframe()
        where = _caller(frame.f_back if frame else None)
        if where is not None or always:
            message = f"{what} from {where or 'a library'}: {RULE}"
            found.append(message)
            raise PyramidViolation(message)
        return original(*args, **kwargs)

    return guard


def _patched(monkeypatch: pytest.MonkeyPatch, found: list[str]) -> None:
    monkeypatch.setattr(
        subprocess.Popen, "__init__", _guarded("subprocess", subprocess.Popen.__init__, found)
    )
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, _guarded(f"os.{name}", getattr(os, name), found))
    start = multiprocessing.process.BaseProcess.start
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", _guarded("a process", start, found))
    listen = socket.socket.listen
    monkeypatch.setattr(socket.socket, "listen", _guarded("listen()", listen, found, always=True))


def _guard_phase() -> Iterator[None]:
    """Setup (module and session fixtures too), call and teardown run under the guard."""
    found: list[str] = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        _patched(monkeypatch, found)
        yield
    if found:  # raised even when the code under test caught the PyramidViolation
        raise PyramidViolation("\n".join(dict.fromkeys(found)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _guard_phase())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _guard_phase())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    return (yield from _guard_phase())
