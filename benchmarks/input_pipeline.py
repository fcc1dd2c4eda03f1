"""Input-pipeline throughput: the ``tf.data`` pipeline next to a bare PIL loop, in one run.

Generates a synthetic dataset (or uses ``--data``), then measures images per second of

- a bare Python loop: PIL open -> RGB -> bilinear resize -> float32 array, one file at a time;
- ``clot_hpo.data.make_dataset``: a first full pass (parallel decode + resize + cache fill),
  and a second pass served from the cache (what every epoch after the first costs).

Files are read once beforehand so both sides measure decoding, not a cold disk; the PIL loop
and the first pass alternate ``--repeats`` times and the best of each counts (shared machines
are noisy). Prints one JSON object with both figures and their ratios.

    .venv/bin/python benchmarks/input_pipeline.py --n 1000 --source-size 128 --image-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clot_hpo.data.pipeline import list_images, make_dataset  # noqa: E402
from clot_hpo.data.synthetic import make_synthetic  # noqa: E402


def pil_loop(paths: list[Path], size: int) -> float:
    """Seconds for a plain decode-and-resize loop over ``paths``."""
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as img:
            arr = np.asarray(
                img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32
            )
        assert arr.shape == (size, size, 3)
    return time.perf_counter() - start


def tf_passes(paths: list[Path], size: int, batch_size: int) -> tuple[float, float]:
    """Seconds for the first (decode + cache) and second (cached) pass of a new ``make_dataset``."""
    labels = np.zeros(len(paths), dtype=np.float32)
    ds = make_dataset(
        paths, labels, image_size=size, batch_size=batch_size, shuffle=False, seed=0, cache=True
    )
    times = []
    for _ in range(2):
        start = time.perf_counter()
        n = 0
        for images, _labels in ds:
            n += int(images.shape[0])
        times.append(time.perf_counter() - start)
        assert n == len(paths)
    return times[0], times[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images in the generated set (half per class)")
    parser.add_argument("--source-size", type=int, default=128, help="side of the generated images")
    parser.add_argument("--image-size", type=int, default=64, help="side the pipeline resizes to")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", type=Path, help="use the images in this folder instead of generating")
    parser.add_argument("--repeats", type=int, default=2, help="alternating measurements; the best counts")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="clot-hpo-bench-") as tmp:
        if args.data:
            paths = list_images([args.data])
        else:
            root = make_synthetic(
                Path(tmp) / "data",
                n_per_class=args.n // 2,
                image_size=args.source_size,
                seed=0,
                progress=False,
            )
            paths = list_images([root])
        for path in paths:  # warm the page cache: both sides then measure decoding
            path.read_bytes()

        import tensorflow as tf

        # Build and run a one-image pipeline first so TF's one-off start-up is not timed.
        list(make_dataset(paths[:1], [0.0], image_size=args.image_size, batch_size=1, shuffle=False, seed=0))

        pil_runs, tf_runs = [], []
        for _ in range(max(1, args.repeats)):
            pil_runs.append(pil_loop(paths, args.image_size))
            tf_runs.append(tf_passes(paths, args.image_size, args.batch_size))
        pil_s = min(pil_runs)
        first_s = min(r[0] for r in tf_runs)
        cached_s = min(r[1] for r in tf_runs)

    n = len(paths)
    result = {
        "n_images": n,
        "source_size": args.source_size if not args.data else None,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "repeats": max(1, args.repeats),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "pil_loop_images_per_s": round(n / pil_s, 1),
        "tf_data_first_pass_images_per_s": round(n / first_s, 1),
        "tf_data_cached_pass_images_per_s": round(n / cached_s, 1),
        "ratio_first_pass_vs_pil": round(pil_s / first_s, 2),
        "ratio_cached_pass_vs_pil": round(pil_s / cached_s, 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
