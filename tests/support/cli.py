"""Run the ``clot-hpo`` command line: in a fresh process the way a user does, or in this one.

``run_cli`` (a subprocess: real exit codes, a fresh interpreter) is for ``tests/integration/``;
``run_main`` calls ``clot_hpo.cli.main`` in the test's own process and returns the same kind of
result, for the unit tests (tests/README.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "clot_hpo.cli"]


def copy_project_files(folder: Path) -> Path:
    """``folder`` with copies of the repository's ``experiments/`` and ``search_spaces/``."""
    shutil.copytree(REPO / "experiments", folder / "experiments")
    shutil.copytree(REPO / "search_spaces", folder / "search_spaces")
    return folder


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``clot-hpo ARGS`` in a fresh interpreter, capturing output."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_main(
    capsys: pytest.CaptureFixture[str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``clot-hpo ARGS`` through ``main()`` in this process: its exit code and what it printed.

    Log records go to pytest's log capture, not to ``stderr``: what ``stderr`` holds is what
    the command printed itself (its one-line error).
    """
    from clot_hpo.cli import main

    capsys.readouterr()  # what the test printed before is not the command's
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["clot-hpo", *args], code, out, err)
