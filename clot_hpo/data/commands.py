"""The ``make-synthetic`` and ``validate-data`` commands, and the image options other commands share."""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path
from typing import Any

from clot_hpo.errors import ConfigError
from clot_hpo.util import AddCommand

DEFAULT_OUT = ".clot-hpo"
"""Folder inside the data folder where ``validate-data`` saves manifest and report by default."""


def make_synthetic_command(args: argparse.Namespace) -> int:
    """``clot-hpo make-synthetic OUT --n-per-class N --image-size S --seed K --difficulty D --prevalence P``.

    The set has ``2 N`` images, a share ``P`` of them positive (0.5 by default).
    """
    from rich.console import Console

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
    prevalence = 0.5 if args.prevalence is None else args.prevalence
    if not 0.0 < prevalence < 1.0:  # also refuses NaN
        raise ConfigError(f"--prevalence: `0 < P < 1` must hold, but got {prevalence}")
    out = Path(args.out)
    start = time.perf_counter()
    dicom = args.format == "dicom"
    if dicom:
        from clot_hpo.data.synthetic_dicom import make_synthetic_dicom as make
    else:
        make = functools.partial(make_synthetic, progress=None)
    make(
        out,
        n_per_class=args.n_per_class,
        image_size=args.image_size,
        seed=args.seed,
        difficulty=difficulty,
        prevalence=prevalence,
    )
    n_positive = len(list((out / "positive").glob("*.dcm" if dicom else "*.png")))
    n_negative = 2 * args.n_per_class - n_positive
    took = f"seed {args.seed}, difficulty {difficulty:g} ({time.perf_counter() - start:.1f} s)"
    console = Console(soft_wrap=True, highlight=False)
    if dicom:
        console.print(
            f"Wrote a synthetic DICOM dataset to [bold]{out}[/bold]: {n_positive} positive + "
            f"{n_negative} negative 16-bit files (prevalence {prevalence:g}), "
            f"{args.image_size}x{args.image_size} px, {took}. Layout: "
            f"{out}/positive/*.dcm, {out}/negative/*.dcm (grouped by PatientID). Synthetic, for "
            "demonstration only; the patients in the headers are fictitious."
        )
        return 0
    console.print(
        f"Wrote a synthetic dataset to [bold]{out}[/bold]: {n_positive} positive + "
        f"{n_negative} negative images (prevalence {prevalence:g}), "
        f"{args.image_size}x{args.image_size} px, {took}."
    )
    console.print(
        f"Layout: {out}/positive/, {out}/negative/, {out}/metadata.csv (image, label, group). "
        "Synthetic, for demonstration only."
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
    from rich.console import Console
    from rich.table import Table

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


def add_dicom_options(p: argparse.ArgumentParser) -> None:
    """How a DICOM file becomes an image: the study's window and frame, unless these say otherwise."""
    p.add_argument(
        "--dicom-window",
        type=float,
        nargs=2,
        metavar=("CENTER", "WIDTH"),
        help="window of DICOM files that carry none (default: the config's data.dicom.window, else "
        "the full range); use the study's",
    )
    p.add_argument(
        "--dicom-frame",
        type=int,
        help="frame (0-based) of multi-frame DICOM files (default: the config's data.dicom.frame, "
        "else such files are refused)",
    )


def add_image_limit_options(p: argparse.ArgumentParser, *, outside_root: bool = False) -> None:
    """The data layer's limits as options: the pixel limit and, for data folders, the root rule."""
    p.add_argument(
        "--max-pixels",
        type=int,
        help="largest width x height, checked from the header before decoding "
        "(default: the config's data.max_pixels, else 50,000,000)",
    )
    add_dicom_options(p)
    if outside_root:
        p.add_argument(
            "--allow-outside-root",
            action="store_true",
            default=None,
            help="accept images outside the data folder (absolute paths, ../, links leaving it)",
        )


def add_commands(add: AddCommand) -> None:
    """Declare ``make-synthetic`` and ``validate-data`` to the command line."""
    p = add("make-synthetic", make_synthetic_command, "write a deterministic synthetic clot dataset")
    p.add_argument("out", help="output folder (Kaggle layout: positive/, negative/, metadata.csv)")
    p.add_argument("--n-per-class", type=int, default=200)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--difficulty",
        default=None,
        help="0 (easy: large, high-contrast clot) to 1 (hard: small, faint clot, more "
        "distractors), or easy, medium, hard (default: easy, 0)",
    )
    p.add_argument(
        "--format",
        choices=["png", "dicom"],
        default="png",
        help="png (default), or dicom: the same pictures as 16-bit CT-like DICOM files with "
        "fictitious patient headers, in class folders without a metadata CSV",
    )
    p.add_argument(
        "--prevalence",
        type=float,
        default=None,
        help="share of positive images, 0 < P < 1 (default 0.5); the set keeps 2 x N images "
        "(rare positives: docs/data.md)",
    )

    p = add("validate-data", validate_data_command, "check a dataset, split it and report leakage")
    p.add_argument("data", help="data folder (class folders or metadata CSV)")
    p.add_argument("--config", help="experiment YAML whose `data` section applies")
    p.add_argument("--layout", choices=["auto", "folders", "metadata"])
    p.add_argument("--metadata-csv", help="metadata CSV name or path (metadata layout)")
    p.add_argument("--group-column", help="column naming the patient/source image")
    p.add_argument(
        "--skip-corrupt",
        action="store_true",
        default=None,
        help="skip unreadable images (each is listed) instead of refusing",
    )
    p.add_argument(
        "--fail-on-leakage", action="store_true", default=None, help="exit 2 when duplicates cross splits"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="folder for the split manifest and report (default: DATA/.clot-hpo)")
    add_image_limit_options(p, outside_root=True)
