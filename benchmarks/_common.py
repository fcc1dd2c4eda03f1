"""Helpers shared by the benchmarks: run the CLI, read a process's memory and its children's CPU."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kb / 1024


def children_cpu_s() -> float:
    """CPU seconds (user + system) of every finished child process and its waited-for children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def clot_hpo(
    *args: str, cwd: Path, env: dict[str, str] | None = None, **popen: object
) -> subprocess.Popen[str]:
    """Start ``clot-hpo ARGS`` (from this checkout) as a process."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "clot_hpo.cli", *args], cwd=cwd, env=full_env, text=True, **popen
    )  # type: ignore[call-overload]


def write_space(path: Path, backbone: str, body: str) -> Path:
    """Write a small search space YAML."""
    path.write_text(f"backbone: {backbone}\nparameters:\n{body}")
    return path
