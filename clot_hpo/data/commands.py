"""The ``make-synthetic`` and ``validate-data`` commands (argument parsing is in ``cli.py``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from clot_hpo.errors import ConfigError

DEFAULT_OUT = ".clot-hpo"
"""Folder inside the data folder where ``validate-data`` saves manifest and report by default."""


def make_synthetic_command(args: argparse.Namespace) -> int:
    """``clot-hpo make-synthetic OUT --n-per-class N --image-size S --seed K --difficulty D``."""
    from clot_hpo.data.synthetic import DEFAULT_DIFFICULTY, make_synthetic, resolve_difficulty
    from clot_hpo.errors import DataError

    if args.n_per_class < 2:
        raise ConfigError(f"--n-per-class: `>= 2` must hold, but got {args.n_per_class}")
    if not 16 <= args.image_size <= 1024:
        raise ConfigError(f"--image-size: `16 <= size <= 1024` must hold, but got {args.image_size}")
    try:
        difficulty = resolve_difficulty(DEFAULT_DIFFICULTY if args.difficulty is None else args.difficulty)
    except DataError as exc:
        raise ConfigError(f"--difficulty: {exc}") from None
    out = Path(args.out)
    start = time.perf_counter()
    if getattr(args, "format", "png") == "dicom":
        return _make_synthetic_dicom(args, out, difficulty, start)
    make_synthetic(
        out,
        n_per_class=args.n_per_class,
        image_size=args.image_size,
        seed=args.seed,
        difficulty=difficulty,
        progress=None,
    )
    console = Console(soft_wrap=True, highlight=False)
    console.print(
        f"Wrote a synthetic dataset to [bold]{out}[/bold]: {args.n_per_class} positive + "
        f"{args.n_per_class} negative images, {args.image_size}x{args.image_size} px, seed {args.seed}, "
        f"difficulty {difficulty:g} ({time.perf_counter() - start:.1f} s)."
    )
    console.print(
        f"Layout: {out}/positive/, {out}/negative/, {out}/metadata.csv (image, label, group). "
        "Synthetic, for demonstration only."
    )
    return 0


def _make_synthetic_dicom(args: argparse.Namespace, out: Path, difficulty: float, start: float) -> int:
    from clot_hpo.data.synthetic_dicom import make_synthetic_dicom

    make_synthetic_dicom(
        out, n_per_class=args.n_per_class, image_size=args.image_size, seed=args.seed, difficulty=difficulty
    )
    Console(soft_wrap=True, highlight=False).print(
        f"Wrote a synthetic DICOM dataset to [bold]{out}[/bold]: {args.n_per_class} positive + "
        f"{args.n_per_class} negative 16-bit files, {args.image_size}x{args.image_size} px, seed "
        f"{args.seed}, difficulty {difficulty:g} ({time.perf_counter() - start:.1f} s). Layout: "
        f"{out}/positive/*.dcm, {out}/negative/*.dcm (grouped by PatientID). Synthetic, for "
        "demonstration only; the patients in the headers are fictitious."
    )
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data.path": args.data,
        "data.layout": args.layout,
        "data.metadata_csv": args.metadata_csv,
        "data.group_column": args.group_column,
        "data.skip_corrupt": args.skip_corrupt,
        "data.fail_on_leakage": args.fail_on_leakage,
        "data.max_pixels": getattr(args, "max_pixels", None),
        "data.allow_outside_root": getattr(args, "allow_outside_root", None),
        "data.dicom.window": getattr(args, "dicom_window", None),
        "data.dicom.frame": getattr(args, "dicom_frame", None),
        "seed": args.seed,
    }


def validate_data_command(args: argparse.Namespace) -> int:
    """``clot-hpo validate-data DATA``: check, split, report leakage, save the manifest."""
    from clot_hpo.config import load_config
    from clot_hpo.data.prepare import prepare_data

    config = load_config(args.config, overrides=_overrides(args))
    out_dir = Path(args.out) if args.out else Path(config.data.path) / DEFAULT_OUT
    start = time.perf_counter()
    prepared = prepare_data(config.data, seed=config.seed, out_dir=out_dir, progress=True)
    elapsed = time.perf_counter() - start

    # soft_wrap: long paths stay on one line (greppable) when stdout is not a terminal.
    console = Console(soft_wrap=True)
    positive, negative = config.data.positive_label, config.data.negative_label
    split_kind = "grouped" if prepared.grouped else "ungrouped"
    console.print(
        f"[bold]{prepared.root}[/bold]: {prepared.layout} layout, {split_kind} split, seed {config.seed}",
        highlight=False,
    )
    table = Table()
    table.add_column("split")
    table.add_column(positive, justify="right")
    table.add_column(negative, justify="right")
    table.add_column("total", justify="right")
    for split, per_class in prepared.counts.items():
        table.add_row(split, str(per_class[positive]), str(per_class[negative]), str(sum(per_class.values())))
    all_pos = sum(c[positive] for c in prepared.counts.values())
    all_neg = sum(c[negative] for c in prepared.counts.values())
    table.add_row("all", str(all_pos), str(all_neg), str(all_pos + all_neg), style="bold")
    console.print(table)

    if prepared.patients is not None:
        per = ", ".join(f"{name} {prepared.patients[name]}" for name in prepared.counts)
        how = "DICOM PatientID, salted hash" if prepared.group_source != "column" else "group column"
        console.print(
            f"Patients: {prepared.patients['all']} ({per}; grouped by {how}); "
            f"{prepared.patients['in_several_splits']} in more than one split",
            highlight=False,
        )
    if prepared.skipped:
        console.print(f"[yellow]Skipped {len(prepared.skipped)} unusable image(s):[/yellow]")
        for path, reason in prepared.skipped:
            console.print(f"  {path}: {reason}", markup=False, highlight=False)
    style = "yellow" if prepared.leakage.has_leakage else "green"
    console.print(f"[{style}]Leakage:[/{style}] ", end="")
    console.print(prepared.leakage.summary(), markup=False, highlight=False)
    console.print(f"Digest:   {prepared.digest}", highlight=False)
    console.print(f"Manifest: {prepared.manifest_path}", highlight=False)
    console.print(f"Report:   {prepared.report_path}", highlight=False)
    console.print(f"Checked in {elapsed:.1f} s.", highlight=False)
    return 0
