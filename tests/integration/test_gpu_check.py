"""The GPU check (benchmarks/gpu_check.sh) is ready: the estimator and the backbones need no
TensorFlow, and the script runs end to end on the CPU with ``KERAS_BACKEND=jax``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JAX_PYTHON_VAR = "CLOT_HPO_JAX_PYTHON"


def test_estimator_and_backbones_import_without_tensorflow() -> None:
    code = (
        "import sys, clot_hpo.budget, clot_hpo.budget.estimator, clot_hpo.models; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _jax_python() -> str | None:
    """An interpreter with JAX and Keras: ``$CLOT_HPO_JAX_PYTHON``, else this one."""
    for python in (os.environ.get(JAX_PYTHON_VAR), sys.executable):
        probe = [python or "", "-c", "import jax, keras"]
        env = {**os.environ, "KERAS_BACKEND": "jax"}  # ~/.keras/keras.json may say tensorflow
        if python and subprocess.run(probe, env=env, capture_output=True, timeout=120).returncode == 0:
            return python
    return None


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_with_jax(tmp_path: Path) -> None:
    python = _jax_python()
    if python is None:
        pytest.skip(
            f"JAX is not importable here (the project runs on TensorFlow); set {JAX_PYTHON_VAR} "
            "to a Python with jax and keras, e.g. a venv made as docs/vram.md says"
        )
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": python,
        "GPU_CHECK_WHEELS": str(tmp_path / "no-wheels"),
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu_check.sh"),
            str(out),
            "--cpu-smoke",
            "--backbones",
            "tiny_cnn",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["mode"] == "cpu-smoke" and report["keras_backend"] == "jax"
    assert report["versions"]["keras"] and report["versions"]["jax"]
    assert report["tensorflow_imported"] is False
    (row,) = report["results"]
    assert row["status"] == "ok", row
    assert (row["backbone"], row["image_size"], row["batch_size"]) == ("tiny_cnn", 32, 2)
    assert row["estimate_bytes"] > row["estimate_tensor_bytes"] > 0
    assert row["peak_bytes"] is None and row["peak_over_estimate"] is None  # no memory_stats on a CPU
    assert row["step_s"] is not None and row["tensorflow_imported"] is False
