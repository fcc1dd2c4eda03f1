"""The largest batch that fits a card, per backbone, image size, precision and trainable part.

Prints the Markdown table kept in README.md ("What fits in 4 GB"), computed by the
estimator (no GPU needed; each backbone is built once per image size, with random weights):

    .venv/bin/python benchmarks/vram_fit_table.py            # 4 GiB, 10 % safety margin
    .venv/bin/python benchmarks/vram_fit_table.py --vram-gb 8 --json
    .venv/bin/python benchmarks/vram_fit_table.py --write-readme   # refresh README.md's table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from clot_hpo.budget.commands import hide_gpus  # noqa: E402
from clot_hpo.budget.device import DEFAULT_SAFETY_MARGIN, VramBudget  # noqa: E402
from clot_hpo.budget.estimator import estimate_vram, format_bytes  # noqa: E402
from clot_hpo.budget.policy import largest_fitting_batch  # noqa: E402

BACKBONES = ("efficientnet_b1", "resnet50")
IMAGE_SIZES = (224, 240, 300)
# (column title, mixed precision, trainable)
COLUMNS = (
    ("float32, fully trained", False, "all"),
    ("mixed precision, fully trained", True, "all"),
    ("float32, head only", False, "head"),
    ("mixed precision, head only", True, "head"),
)
MAX_BATCH = 4096
README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- vram-table:start -->", "<!-- vram-table:end -->"
COMMAND = "benchmarks/vram_fit_table.py"


def fit_table(vram_gb: float, margin: float, optimizer: str = "adam") -> list[dict[str, Any]]:
    """One row per (backbone, image size): the largest batch per column (``None``: none fits)."""
    budget = VramBudget.from_gb(vram_gb, margin)
    usable = budget.usable_bytes
    assert usable is not None
    rows = []
    for backbone in BACKBONES:
        for size in IMAGE_SIZES:
            row: dict[str, Any] = {"backbone": backbone, "image_size": size}
            for title, mixed, trainable in COLUMNS:
                row[title] = largest_fitting_batch(
                    backbone=backbone,
                    image_size=size,
                    budget_bytes=usable,
                    mixed_precision=mixed,
                    trainable=trainable,
                    optimizer=optimizer,
                    high=MAX_BATCH,
                )
            rows.append(row)
    return rows


def _cell(value: int | None) -> str:
    if value is None:
        return "none"
    return f">= {MAX_BATCH}" if value >= MAX_BATCH else str(value)


def to_markdown(rows: list[dict[str, Any]], vram_gb: float, margin: float, optimizer: str) -> str:
    """The table and one line saying what it assumes."""
    usable = VramBudget.from_gb(vram_gb, margin).usable_bytes
    head = "| backbone | image size | " + " | ".join(t for t, _, _ in COLUMNS) + " |"
    rule = "|---|---:|" + "---:|" * len(COLUMNS)
    lines = [head, rule]
    for row in rows:
        cells = " | ".join(_cell(row[t]) for t, _, _ in COLUMNS)
        lines.append(f"| {row['backbone']} | {row['image_size']} px | {cells} |")
    # Example of what one cell means, from the estimator itself.
    example = estimate_vram("efficientnet_b1", 240, 16, mixed_precision=True, optimizer=optimizer)
    lines.append("")
    lines.append(
        f"Largest batch size whose estimate fits {vram_gb:g} GiB less a {margin:.0%} safety margin "
        f"({format_bytes(usable)} usable); {optimizer} optimizer, dense head of 256 units. "
        f"For scale: EfficientNetB1 at 240 px, batch 16, mixed precision, fully trained is estimated "
        f"at {format_bytes(example.total_bytes)}. A trial whose sampled batch is larger is reshaped to "
        f"the largest batch that fits with gradient accumulation."
    )
    return "\n".join(lines)


def readme_block(table: str) -> str:
    """What goes between README.md's markers: the command, then the table."""
    return (
        f"Produced by the estimator (`.venv/bin/python {COMMAND} --write-readme`; "
        f"`clot-hpo estimate-vram` sizes any one configuration):\n\n{table}\n"
    )


def write_readme(block: str, path: Path = README) -> None:
    """Replace the text between the vram-table markers of ``path``."""
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{path} lacks the markers {START} ... {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{block}{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Print the table (``--json``: the rows as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vram-gb", type=float, default=4.0)
    parser.add_argument("--safety-margin", type=float, default=DEFAULT_SAFETY_MARGIN)
    parser.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-readme", action="store_true", help="also put the table into README.md")
    args = parser.parse_args(argv)
    hide_gpus()
    started = time.perf_counter()
    rows = fit_table(args.vram_gb, args.safety_margin, args.optimizer)
    if args.json:
        print(
            json.dumps(
                {
                    "vram_gb": args.vram_gb,
                    "safety_margin": args.safety_margin,
                    "optimizer": args.optimizer,
                    "rows": rows,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
        )
    else:
        table = to_markdown(rows, args.vram_gb, args.safety_margin, args.optimizer)
        print(table)
        if args.write_readme:
            write_readme(readme_block(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
