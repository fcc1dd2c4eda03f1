"""Peak GPU memory of training, measured with JAX, next to ``estimate_vram``: calibration data.

For each configuration the classifier is built as the product builds it (backbone -> global
average pooling -> dropout -> Dense(1, sigmoid, float32)), from random initialisation, under
``mixed_float16``, compiled with Adam, and trained for a few steps on random pixels. Each
configuration runs in its own process (JAX cannot reset its peak statistics), which reports
``jax.devices()[0].memory_stats()["peak_bytes_in_use"]`` and its step times. The estimate,
``estimate_vram(..., mixed_precision=True, trainable="all", optimizer="adam", head_units=0)``,
is computed in this process on the CPU (``JAX_PLATFORMS=cpu``), as a study process would.

JAX's allocator does not see the CUDA context, so ``peak_over_estimate_tensors`` compares the
peak with the estimate less ``RUNTIME_OVERHEAD_BYTES``; ``peak_over_estimate`` with the whole.
A ratio below 1 means the estimate is safe.

    KERAS_BACKEND=jax python benchmarks/gpu_check.py OUT_DIR               # GPU grid, JSON in OUT_DIR
    KERAS_BACKEND=jax python benchmarks/gpu_check.py OUT_DIR --cpu-smoke   # 32 px, batch 2, 2 steps

Normally started by ``benchmarks/gpu_check.sh`` (installs Keras from wheels; see docs/vram.md).
No configuration starts after ``--deadline-s``; results are written after every configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (backbone, image size, batch size): the two product settings first, then larger ones.
GRID = [
    ("efficientnet_b1", 240, 16),
    ("resnet50", 224, 16),
    ("efficientnet_b1", 240, 64),
    ("resnet50", 224, 64),
    ("efficientnet_b1", 300, 32),
    ("resnet50", 300, 32),
]
SMOKE_SIZE, SMOKE_BATCH, SMOKE_STEPS = 32, 2, 2


def measure(backbone: str, image_size: int, batch_size: int, steps: int) -> dict[str, Any]:
    """Train ``steps`` steps of one configuration in this process; peak memory and step times."""
    import jax
    import keras
    import numpy as np

    from clot_hpo.models import create_backbone

    device = jax.devices()[0]
    keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="pixels")
    x = create_backbone(backbone, image_size=image_size, weights=None)(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    model = keras.Model(inputs, outputs, name="classifier")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")

    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    labels = rng.integers(0, 2, (batch_size, 1)).astype("float32")
    stats = device.memory_stats() or {}
    in_use_after_build = stats.get("bytes_in_use")
    times = []
    for _ in range(steps):  # train_on_batch returns NumPy losses: each call waits for its step
        start = time.perf_counter()
        loss = model.train_on_batch(pixels, labels)
        times.append(time.perf_counter() - start)
    stats = device.memory_stats() or {}  # None on the CPU
    return {
        "device": f"{device.platform}: {device.device_kind}",
        "params": int(model.count_params()),
        "loss": float(np.asarray(loss)),
        "first_step_s": round(times[0], 3),  # includes XLA compilation
        "step_s": round(statistics.median(times[1:]), 4) if len(times) > 1 else None,
        "peak_bytes": stats.get("peak_bytes_in_use"),
        "bytes_in_use_after_build": in_use_after_build,
        "memory_stats": stats or None,
        "tensorflow_imported": "tensorflow" in sys.modules,
    }


def versions() -> dict[str, str | None]:
    """Python's and the installed packages' versions (``None``: not installed)."""
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    found = {d: version(d) for d in ("jax", "jaxlib", "jax-cuda12-plugin", "keras", "numpy", "tensorflow")}
    return {"python": platform.python_version(), **found}


def gib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def run_one(config: tuple[str, int, int], steps: int, timeout_s: float) -> dict[str, Any]:
    """Measure one configuration in a fresh process (the real GPU platform, not the CPU)."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    if ORIGINAL_JAX_PLATFORMS is not None:
        env["JAX_PLATFORMS"] = ORIGINAL_JAX_PLATFORMS
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # grow as needed, as a trial does
    cmd = [sys.executable, __file__, "--one", json.dumps([*config, steps])]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "error": f"no result within {timeout_s:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode == 0 and lines:
        return {"status": "ok", **json.loads(lines[-1].removeprefix("RESULT "))}
    tail = proc.stderr.strip().splitlines()[-20:]
    oom = any(w in proc.stderr for w in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory"))
    return {"status": "oom" if oom else "error", "returncode": proc.returncode, "error": "\n".join(tail)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder for gpu_check.json")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help=f"tiny sizes ({SMOKE_SIZE} px, batch {SMOKE_BATCH}, {SMOKE_STEPS} steps) on any device",
    )
    parser.add_argument("--backbones", help="comma-separated: only these backbones (smoke: one config each)")
    parser.add_argument(
        "--steps", type=int, default=4, help="training steps per configuration (first compiles)"
    )
    parser.add_argument("--deadline-s", type=float, default=390.0, help="start no configuration after this")
    args = parser.parse_args(argv)

    from clot_hpo.budget.estimator import RUNTIME_OVERHEAD_BYTES, estimate_vram

    wanted = args.backbones.split(",") if args.backbones else None
    if args.cpu_smoke:
        names = wanted or list(dict.fromkeys(b for b, _, _ in GRID))
        configs, steps = [(b, SMOKE_SIZE, SMOKE_BATCH) for b in names], SMOKE_STEPS
    else:
        configs, steps = [c for c in GRID if wanted is None or c[0] in wanted], args.steps

    args.out_dir.mkdir(parents=True, exist_ok=True)
    out_file = args.out_dir / "gpu_check.json"
    report: dict[str, Any] = {
        "mode": "cpu-smoke" if args.cpu_smoke else "gpu",
        "keras_backend": os.environ.get("KERAS_BACKEND"),
        "policy": "mixed_float16",
        "versions": versions(),
        "runtime_overhead_bytes": RUNTIME_OVERHEAD_BYTES,
        "results": [],
    }
    start = time.monotonic()

    def save() -> None:
        report["device"] = next((r["device"] for r in report["results"] if "device" in r), None)
        report["elapsed_s"] = round(time.monotonic() - start, 1)
        report["tensorflow_imported"] = "tensorflow" in sys.modules  # by the estimates, here
        out_file.write_text(json.dumps(report, indent=2) + "\n")

    for backbone, size, batch in configs:
        row: dict[str, Any] = {"backbone": backbone, "image_size": size, "batch_size": batch, "steps": steps}
        report["results"].append(row)
        elapsed = time.monotonic() - start
        if elapsed > args.deadline_s:
            row["status"] = f"skipped: deadline {args.deadline_s:.0f} s reached"
            save()
            continue
        est = estimate_vram(
            backbone, size, batch, mixed_precision=True, trainable="all", optimizer="adam", head_units=0
        )
        tensors = est.total_bytes - RUNTIME_OVERHEAD_BYTES
        row.update(estimate_bytes=est.total_bytes, estimate_tensor_bytes=tensors, estimate=est.breakdown())
        row["status"] = "running"  # what a run cut short by the outer timeout leaves
        save()
        row.update(
            run_one((backbone, size, batch), steps, timeout_s=max(60.0, args.deadline_s + 60 - elapsed))
        )
        peak = row.get("peak_bytes")
        row["peak_over_estimate"] = round(peak / est.total_bytes, 3) if peak else None
        row["peak_over_estimate_tensors"] = round(peak / tensors, 3) if peak else None
        save()
        print(
            f"{backbone} {size} px batch {batch}: {row['status']}, peak {gib(peak)}, "
            f"estimate {gib(est.total_bytes)}, ratio {row['peak_over_estimate']}, step {row.get('step_s')} s",
            flush=True,
        )
    print(f"wrote {out_file}")
    return 0 if all(r["status"] == "ok" for r in report["results"] if "estimate" in r) else 1


ORIGINAL_JAX_PLATFORMS = os.environ.get("JAX_PLATFORMS")

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print("RESULT " + json.dumps(measure(*json.loads(sys.argv[2]))), flush=True)
        sys.exit(0)
    os.environ["JAX_PLATFORMS"] = "cpu"  # this process only estimates: keep it off the GPU
    sys.exit(main())
