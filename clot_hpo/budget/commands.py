"""``clot-hpo estimate-vram``: one configuration's estimate, and whether it fits a card."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from clot_hpo.budget.device import DEFAULT_SAFETY_MARGIN, VramBudget
from clot_hpo.budget.estimator import estimate_vram, format_bytes
from clot_hpo.budget.policy import largest_fitting_batch, plan_trial
from clot_hpo.models import list_backbones, list_optimizers
from clot_hpo.util import AddCommand


def hide_gpus() -> None:
    """Keep TensorFlow off the GPU in a process that only builds models to measure them.

    Without this, TensorFlow's first context maps nearly all GPU memory by default. Too late
    once the context exists (TensorFlow raises RuntimeError); then nothing changes.
    """
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):
        tf.config.set_visible_devices([], "GPU")


def estimate_report(
    *,
    backbone: str,
    image_size: int,
    batch_size: int,
    mixed_precision: bool,
    trainable: str,
    optimizer: str,
    vram_gb: float | None,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
) -> dict[str, Any]:
    """The estimate as a JSON-able dict; with ``vram_gb``, the fit and what a study would do."""
    budget = VramBudget.from_gb(vram_gb, safety_margin) if vram_gb is not None else None
    estimate = estimate_vram(
        backbone,
        image_size,
        batch_size,
        mixed_precision=mixed_precision,
        trainable=trainable,
        optimizer=optimizer,
    )
    report: dict[str, Any] = {**estimate.to_dict(), "breakdown": estimate.breakdown()}
    if budget is not None:
        usable = budget.usable_bytes
        assert usable is not None
        decision = plan_trial(
            backbone=backbone,
            image_size=image_size,
            batch_size=batch_size,
            budget=budget,
            mixed_precision=mixed_precision,
            trainable=trainable,
            optimizer=optimizer,
        )
        report.update(
            vram_gb=vram_gb,
            safety_margin=safety_margin,
            budget_bytes=usable,
            fits=estimate.total_bytes <= usable,
            max_batch_size=largest_fitting_batch(
                backbone=backbone,
                image_size=image_size,
                budget_bytes=usable,
                mixed_precision=mixed_precision,
                trainable=trainable,
                optimizer=optimizer,
            ),
            decision=decision.to_attrs(),
        )
    return report


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    precision = "mixed float16" if report["mixed_precision"] else "float32"
    console = Console()
    console.print(
        f"[bold]{report['backbone']}[/bold] {report['image_size']}px · batch {report['batch_size']} · "
        f"{precision} · trainable={report['trainable']} · {report['optimizer']}"
    )
    table = Table()
    table.add_column("term")
    table.add_column("memory", justify="right")
    for name, value in report["breakdown"].items():
        table.add_row(name.removesuffix("_bytes").replace("_", " "), format_bytes(value))
    table.add_row("[bold]total[/bold]", f"[bold]{format_bytes(report['total_bytes'])}[/bold]")
    console.print(table)
    console.print(f"parameters: {report['total_params']:,} ({report['trainable_params']:,} trainable)")
    if "fits" in report:
        verdict = "[green]fits[/green]" if report["fits"] else "[red]does not fit[/red]"
        largest = report["max_batch_size"]
        console.print(
            f"{verdict} in {report['vram_gb']:g} GiB less a {report['safety_margin']:.0%} margin "
            f"({format_bytes(report['budget_bytes'])} usable); largest batch that fits: "
            f"{largest if largest is not None else 'none'}"
        )
        console.print(f"a study would {report['decision']['action']}: {report['decision']['reason']}")


def estimate_vram_command(args: argparse.Namespace) -> int:
    """Print the estimate (``--json``: one JSON object); exit 0 whether or not it fits."""
    margin = float(args.safety_margin)
    if args.vram_gb is not None:  # fail fast, before TensorFlow is imported
        VramBudget.from_gb(args.vram_gb, margin)
    hide_gpus()
    report = estimate_report(
        backbone=args.backbone,
        image_size=args.image_size,
        batch_size=args.batch_size,
        mixed_precision=bool(args.mixed_precision),
        trainable=args.trainable,
        optimizer=args.optimizer,
        vram_gb=args.vram_gb,
        safety_margin=margin,
    )
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        _print_table(report)
    return 0


def add_commands(add: AddCommand) -> None:
    """Declare ``estimate-vram`` to the command line."""
    p = add("estimate-vram", estimate_vram_command, "estimate a training configuration's GPU memory")
    p.add_argument("--backbone", required=True, choices=list_backbones())
    p.add_argument("--image-size", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--trainable", choices=["all", "head"], default="all")
    p.add_argument("--optimizer", choices=list_optimizers(), default="adam")
    p.add_argument("--vram-gb", type=float, help="card memory in GiB: also print whether it fits")
    p.add_argument(
        "--safety-margin", type=float, default=DEFAULT_SAFETY_MARGIN, help="share of the card kept free"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
