"""The VRAM benchmarks run, and README's table is the fit table's current output."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "vram_check.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.mark.slow
def test_vram_check_dry_run_plans_and_trains_every_configuration() -> None:
    proc = _run("--dry-run", "--emulate-gb", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ooms"] == 0 and summary["errors"] == 0
    assert {row["status"] for row in summary["rows"]} == {"ok"}
    reshaped = [row for row in summary["rows"] if row["action"] == "reshape"]
    assert reshaped, "the dry-run grid has a configuration over a 0.5 GiB budget"
    for row in reshaped:
        assert row["estimate_bytes"] <= int(0.5 * 1024**3 * 0.9)
        assert row["batch_size"] * row["accumulation_steps"] >= row["requested_batch_size"]


def test_vram_check_without_gpu_skips() -> None:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    proc = _run("--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"skipped": "no GPU"}
    assert "no GPU" in proc.stderr


@pytest.mark.slow
def test_readme_table_is_current() -> None:
    table = _load("vram_fit_table")
    rows = table.fit_table(4.0, 0.1)
    assert len(rows) == len(table.BACKBONES) * len(table.IMAGE_SIZES)
    for row in rows:  # mixed precision and head-only never fit fewer
        full, mixed, head, mixed_head = (row[title] for title, _, _ in table.COLUMNS)
        assert mixed >= full and head >= full and mixed_head >= head
    block = table.readme_block(table.to_markdown(rows, 4.0, 0.1, "adam"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    current = readme.split(table.START, 1)[1].split(table.END, 1)[0]
    assert current.strip() == block.strip(), "run benchmarks/vram_fit_table.py --write-readme"
