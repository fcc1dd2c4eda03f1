"""Check the VRAM estimator against TensorFlow's measured peak on a real GPU.

For each configuration of a small grid it builds the classifier (backbone + the head the
estimator assumes), trains a few steps on random pixels and prints the estimate next to
``tf.config.experimental.get_memory_info("GPU:0")["peak"]`` (reset between configurations)
and their ratio. The estimate's runtime overhead (CUDA context, cuDNN handles) lives outside
TensorFlow's allocator, so the ratio compares the estimate without it.

``--emulate-gb 4`` caps TensorFlow's memory as a 4 GiB card would (4096 MiB less the
estimator's runtime overhead, through a logical device) and plans every configuration with the
budget policy first, exactly as a ``vram_gb: 4`` study does: each one runs as sampled or
reshaped, or is pruned; any out-of-memory error is reported (there should be none).

    .venv/bin/python benchmarks/vram_check.py                 # estimate vs peak
    .venv/bin/python benchmarks/vram_check.py --emulate-gb 4  # a 4 GiB study, no OOM expected
    .venv/bin/python benchmarks/vram_check.py --dry-run       # CPU, tiny sizes, 1 step

Without a GPU (and without ``--dry-run``) it says so and prints ``{"skipped": "no GPU"}``.
New configurations stop starting after ``--deadline-s`` (default 400 s) so a run ends within
8 minutes; those are listed as skipped.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from clot_hpo.budget import (  # noqa: E402
    VramBudget,
    configure_gpu,
    estimate_vram,
    format_bytes,
    is_oom_error,
    plan_trial,
)
from clot_hpo.budget.estimator import RUNTIME_OVERHEAD_BYTES, MiB  # noqa: E402


@dataclass(frozen=True)
class Config:
    """One grid point."""

    backbone: str
    image_size: int
    batch_size: int
    mixed_precision: bool
    trainable: str = "all"

    def label(self) -> str:  # noqa: D102
        precision = "mixed" if self.mixed_precision else "fp32"
        return f"{self.backbone} {self.image_size}px b{self.batch_size} {precision} {self.trainable}"


# Most telling first: the seed's settings, then the neighbours that bound them.
MEASURE_GRID = (
    Config("efficientnet_b1", 240, 16, True),
    Config("resnet50", 224, 16, True),
    Config("efficientnet_b1", 240, 16, False),
    Config("resnet50", 224, 16, False),
    Config("efficientnet_b1", 240, 32, True),
    Config("resnet50", 224, 32, True),
    Config("efficientnet_b1", 300, 16, True),
    Config("efficientnet_b1", 240, 64, True, "head"),
    Config("resnet50", 224, 64, True, "head"),
)
# A 4 GiB study's search space, infeasible corners included.
EMULATE_GRID = (
    Config("efficientnet_b1", 240, 16, True),
    Config("resnet50", 224, 16, True),
    Config("efficientnet_b1", 240, 64, True),
    Config("resnet50", 224, 64, False),
    Config("efficientnet_b1", 300, 32, False),
    Config("efficientnet_b1", 480, 64, False),
    Config("resnet50", 300, 128, True, "head"),
)
DRY_GRID = (
    Config("tiny_cnn", 32, 4, False),
    Config("tiny_cnn", 32, 4, True, "head"),
    Config("tiny_cnn", 32, 8, True),
    # Reshaped under a small --emulate-gb (float32: float16 convolutions are slow on CPUs).
    Config("tiny_cnn", 64, 512, False),
)


def build_classifier(cfg: Config) -> Any:
    """Backbone + pooling -> dropout -> dense(256) -> sigmoid (float32), as the estimator assumes."""
    import keras

    from clot_hpo.models import create_backbone

    backbone = create_backbone(cfg.backbone, image_size=cfg.image_size, weights=None)
    backbone.trainable = cfg.trainable == "all"
    inputs = keras.Input((cfg.image_size, cfg.image_size, 3), dtype="float32")
    x = backbone(inputs, training=cfg.trainable == "all")
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    x = keras.layers.Dense(256, activation="relu")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def train_steps(cfg: Config, batch_size: int, accumulation: int, steps: int, jit_compile: Any) -> float:
    """Train ``steps`` optimizer updates on random pixels; return the seconds it took."""
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy("mixed_float16" if cfg.mixed_precision else "float32")
    model = build_classifier(cfg)
    optimizer = keras.optimizers.Adam(
        1e-4, gradient_accumulation_steps=accumulation if accumulation > 1 else None
    )
    model.compile(optimizer=optimizer, loss="binary_crossentropy", jit_compile=jit_compile)
    with tf.device("/CPU:0"):
        x = tf.random.uniform((batch_size, cfg.image_size, cfg.image_size, 3), 0.0, 255.0)
        y = tf.cast(tf.random.uniform((batch_size, 1)) > 0.5, tf.float32)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=steps * accumulation, epochs=1, verbose=0)
    return time.perf_counter() - started


def _memory(device: str | None) -> dict[str, int] | None:
    import tensorflow as tf

    if device is None:
        return None
    return tf.config.experimental.get_memory_info(device)


def run_config(
    cfg: Config, args: argparse.Namespace, budget: VramBudget | None, device: str | None
) -> dict[str, Any]:
    """Plan (with a budget), train and measure one configuration."""
    import keras
    import tensorflow as tf

    row: dict[str, Any] = {"config": cfg.label(), "requested_batch_size": cfg.batch_size}
    batch, accumulation = cfg.batch_size, 1
    if budget is not None:
        decision = plan_trial(
            backbone=cfg.backbone,
            image_size=cfg.image_size,
            batch_size=cfg.batch_size,
            budget=budget,
            mixed_precision=cfg.mixed_precision,
            trainable=cfg.trainable,
        )
        row.update(action=decision.action, reason=decision.reason)
        if decision.action == "prune":
            row["status"] = "pruned before training"
            return row
        batch, accumulation = decision.batch_size, decision.accumulation_steps
    estimate = estimate_vram(
        cfg.backbone,
        cfg.image_size,
        batch,
        mixed_precision=cfg.mixed_precision,
        trainable=cfg.trainable,
        accumulation_steps=accumulation,
    )
    comparable = estimate.total_bytes - RUNTIME_OVERHEAD_BYTES
    row.update(
        batch_size=batch,
        accumulation_steps=accumulation,
        estimate_bytes=estimate.total_bytes,
        estimate_tf_bytes=comparable,
    )

    keras.backend.clear_session()
    gc.collect()
    if device is not None:
        tf.config.experimental.reset_memory_stats(device)
    baseline = (_memory(device) or {}).get("current")
    try:
        row["seconds"] = round(train_steps(cfg, batch, accumulation, args.steps, args.jit_compile), 1)
        row["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - an OOM is a result here, anything else too
        row["status"] = "OOM" if is_oom_error(exc) else f"error: {type(exc).__name__}"
        row["error"] = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    memory = _memory(device)
    if memory is not None:
        row["peak_bytes"] = int(memory["peak"])
        row["baseline_bytes"] = int(baseline or 0)
        if row["status"] == "ok" and memory["peak"] > 0:
            row["ratio"] = round(comparable / memory["peak"], 3)
    keras.backend.clear_session()
    gc.collect()
    return row


def _print_rows(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'configuration':<40} {'plan':<12} {'estimate':>10} {'est. (TF)':>10} {'TF peak':>10} "
        f"{'ratio':>6}  status"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        plan = f"{r['batch_size']}x{r['accumulation_steps']}" if "batch_size" in r else "-"
        peak = format_bytes(r["peak_bytes"]) if "peak_bytes" in r else "-"
        est = format_bytes(r["estimate_bytes"]) if "estimate_bytes" in r else "-"
        est_tf = format_bytes(r["estimate_tf_bytes"]) if "estimate_tf_bytes" in r else "-"
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        print(f"{r['config']:<40} {plan:<12} {est:>10} {est_tf:>10} {peak:>10} {ratio:>6}  {r['status']}")


def main(argv: list[str] | None = None) -> int:
    """Run the grid; print a table and a JSON summary (``--json``: the JSON only)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulate-gb", type=float, help="cap TensorFlow's memory as a card of this many GiB")
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny sizes, 1 step: checks the script runs"
    )
    parser.add_argument(
        "--steps", type=int, help="optimizer updates per configuration (default 3; dry run 1)"
    )
    parser.add_argument("--deadline-s", type=float, default=400.0, help="start no configuration after this")
    parser.add_argument(
        "--jit-compile",
        choices=["auto", "true", "false"],
        default="auto",
        help="Keras compile(jit_compile=...); auto (XLA on GPU) is what trials use",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON summary only")
    args = parser.parse_args(argv)
    args.steps = args.steps or (1 if args.dry_run else 3)
    args.jit_compile = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    if args.emulate_gb is not None and args.emulate_gb <= 0:
        parser.error(f"--emulate-gb must be positive, but got {args.emulate_gb}")
    started = time.perf_counter()

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.dry_run:
        print(
            "vram_check: no GPU visible; nothing to measure (use --dry-run to exercise the script on CPU)",
            file=sys.stderr,
        )
        print(json.dumps({"skipped": "no GPU"}))
        return 0
    if args.dry_run:
        tf.config.set_visible_devices([], "GPU")
        gpus = []

    limit_mb = None
    if args.emulate_gb is not None and gpus:
        # A real card also holds the CUDA context in its memory; TensorFlow's cap does not.
        limit_mb = int(args.emulate_gb * 1024 - RUNTIME_OVERHEAD_BYTES / MiB)
    gpu = configure_gpu("off", memory_limit_mb=limit_mb)
    device = "GPU:0" if gpus else None
    budget = VramBudget.from_gb(args.emulate_gb) if args.emulate_gb is not None else None
    grid = DRY_GRID if args.dry_run else (EMULATE_GRID if budget is not None else MEASURE_GRID)
    if not args.json:
        name = gpu.gpus[0]["device_name"] if gpu.gpus else "CPU (dry run)"
        cap = f", TensorFlow capped at {limit_mb} MiB" if limit_mb else ""
        print(f"vram_check on {name}{cap}; budget: {budget.describe() if budget else 'none (measure only)'}")

    rows: list[dict[str, Any]] = []
    for cfg in grid:
        if time.perf_counter() - started > args.deadline_s:
            rows.append({"config": cfg.label(), "status": "skipped (time budget)"})
            continue
        row = run_config(cfg, args, budget, device)
        rows.append(row)
        if not args.json:
            print(f"  {row['config']}: {row['status']} {row.get('ratio', '')}", flush=True)

    ratios = [r["ratio"] for r in rows if "ratio" in r]
    summary = {
        "device": gpu.gpus[0]["device_name"] if gpu.gpus else "cpu",
        "emulate_gb": args.emulate_gb,
        "tf_memory_limit_mb": limit_mb,
        "jit_compile": args.jit_compile,
        "steps": args.steps,
        "rows": rows,
        "ooms": sum(r["status"] == "OOM" for r in rows),
        "errors": sum(r["status"].startswith("error") for r in rows),
        "ratio_min": min(ratios) if ratios else None,
        "ratio_median": statistics.median(ratios) if ratios else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not args.json:
        print()
        _print_rows(rows)
        print(
            "ratio = estimate without the runtime overhead / TensorFlow's peak (>= 1: the estimate is safe)"
        )
    print(json.dumps(summary))
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
