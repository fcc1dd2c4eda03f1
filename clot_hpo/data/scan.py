"""Find the images of a dataset and their labels, in either layout users have.

Layouts:

- **folders**: ``DATA/<positive_dir>/**/*.png|jpg|jpeg|dcm`` and ``DATA/<negative_dir>/**/...``
  (a file without one of these suffixes counts when it carries DICOM's ``DICM`` mark);
- **metadata**: a CSV (default ``DATA/metadata.csv``) with an image column (path relative
  to DATA, or absolute), a label column and optionally a group column (patient/source).

``layout: auto`` uses the metadata CSV when it exists, the class folders otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from clot_hpo.config.schema import DataConfig
from clot_hpo.data.limits import (
    DICOM_SUFFIXES,
    display_name,
    has_utf8_name,
    is_dicom_file,
    non_utf8_message,
    outside_root_message,
)
from clot_hpo.errors import DataError
from clot_hpo.util import first_line

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"}) | DICOM_SUFFIXES
COLUMNS = ["path", "relpath", "label", "group"]
MAX_LISTED = 5
"""How many offending entries an error message names before "and N more"."""


def format_offenders(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    """``a; b; c`` for at most ``limit`` items, then ``and N more``."""
    shown = "; ".join(items[:limit])
    rest = len(items) - limit
    return f"{shown}; and {rest} more" if rest > 0 else shown


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a PNG/JPEG/DICOM file (by suffix, or DICOM's mark) and is not hidden."""
    if path.name.startswith("."):
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES or is_dicom_file(path)


def resolve_layout(cfg: DataConfig, root: Path) -> tuple[str, Path]:
    """The layout to use (``folders`` or ``metadata``) and the metadata CSV's path."""
    csv_path = Path(cfg.metadata_csv)
    if not csv_path.is_absolute():
        inside = root / csv_path
        # A path that exists as given (relative to the working directory) also counts, so
        # `--metadata-csv labels/train.csv` works from anywhere.
        csv_path = inside if inside.exists() or not csv_path.exists() else csv_path
    if cfg.layout == "auto":
        return ("metadata" if csv_path.is_file() else "folders"), csv_path
    return cfg.layout, csv_path


def scan_dataset(cfg: DataConfig, root: Path | None = None) -> pd.DataFrame:
    """List a dataset's images with their labels and groups.

    Args:
        cfg: the ``data`` section of the experiment config.
        root: the data folder; defaults to ``cfg.path``.

    Returns:
        A DataFrame with columns ``path`` (absolute str), ``relpath`` (str, relative to root,
        with forward slashes), ``label`` (int: 1 = positive/clot, 0 = negative) and ``group``
        (str, or None when the dataset has no groups), sorted by ``relpath``.

    Raises:
        DataError: the folder or CSV is missing, a label is outside the declared set, a
            metadata row names a missing file, or a class has no images.
    """
    root = Path(cfg.path if root is None else root)
    if not root.exists():
        raise DataError(f"{root}: data folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected a data folder)")
    layout, csv_path = resolve_layout(cfg, root)
    if layout == "metadata":
        frame = _scan_metadata(cfg, root, csv_path)
        source = str(csv_path)
    else:
        frame = _scan_folders(cfg, root)
        source = str(root)
    log.debug("scanned %d images in %s (layout: %s)", len(frame), source, layout)
    check_classes(frame, cfg, source, layout)
    frame = frame.sort_values("relpath", kind="stable").reset_index(drop=True)
    frame.attrs["layout"] = layout
    frame.attrs["source"] = source
    return frame


def _relpath(resolved: Path, resolved_root: Path) -> str:
    """``resolved`` relative to the root, or absolute when outside it (both already resolved)."""
    if resolved.is_relative_to(resolved_root):
        return resolved.relative_to(resolved_root).as_posix()
    return resolved.as_posix()


def _scan_folders(cfg: DataConfig, root: Path) -> pd.DataFrame:
    rows = []
    missing = []
    refused: list[str] = []
    resolved_root = root.resolve()
    for name, label in ((cfg.positive_dir, 1), (cfg.negative_dir, 0)):
        folder = root / name
        if not folder.is_dir():
            missing.append(name)
            continue
        ignored = 0
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            shown = display_name(path.relative_to(root).as_posix())
            if not is_image_file(path):
                ignored += not path.name.startswith(".")
            elif not has_utf8_name(path):
                refused.append(non_utf8_message(path.relative_to(root)))
            else:
                real = path.resolve()
                if cfg.allow_outside_root or real.is_relative_to(resolved_root):
                    rows.append((str(real), _relpath(real, resolved_root), label, None, shown))
                else:
                    refused.append(outside_root_message(shown, path, root))
        if ignored:
            log.warning("%s: ignored %d file(s) that are not PNG/JPEG/DICOM", folder, ignored)
    if missing:
        present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DataError(
            f"{root}: class folder(s) {missing} not found (layout: folders; folders present: "
            f"{present}; set data.positive_dir/negative_dir, or provide "
            f"{cfg.metadata_csv} for the metadata layout)"
        )
    refused += _same_file_twice(rows, cfg)
    if refused:
        raise DataError(f"{root}: {format_offenders(refused)}")
    frame = pd.DataFrame([r[:4] for r in rows], columns=COLUMNS)
    frame["label"] = frame["label"].astype(int)
    frame["group"] = frame["group"].astype(object)
    return frame


def _same_file_twice(rows: list[tuple[str, str, int, None, str]], cfg: DataConfig) -> list[str]:
    """Entries that are one file reached twice (through a link): in both classes, or twice in one."""
    by_file: dict[str, list[tuple[int, str]]] = {}
    for path, _, label, _, shown in rows:
        by_file.setdefault(path, []).append((label, shown))
    problems = []
    for entries in by_file.values():
        if len(entries) < 2:
            continue
        names = ", ".join(shown for _, shown in entries)
        if len({label for label, _ in entries}) > 1:
            problems.append(
                f"{names}: the same file (through a link) in both classes {cfg.positive_label!r} and "
                f"{cfg.negative_label!r}; an image can have one label only"
            )
        else:
            problems.append(f"{names}: the same file (through a link); each image must appear once")
    return problems


def _scan_metadata(cfg: DataConfig, root: Path, csv_path: Path) -> pd.DataFrame:
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: metadata CSV not found (layout: metadata)")
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        table = pd.read_csv(
            csv_path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = first_line(exc)
        raise DataError(f"{csv_path}: not a readable CSV: {first}") from exc
    table.columns = [str(c).strip() for c in table.columns]

    group_column = cfg.group_column or None
    needed = [cfg.image_column, cfg.label_column]
    # The default group column may simply be absent (ungrouped data); one the user named
    # explicitly must exist, or a typo would silently give an ungrouped split.
    if group_column and "group_column" in cfg.model_fields_set:
        needed.append(group_column)
    absent = [c for c in needed if c not in table.columns]
    if absent:
        raise DataError(
            f"{csv_path}: column(s) {absent} not found; the CSV has columns {list(table.columns)} "
            "(set data.image_column / label_column / group_column)"
        )
    if group_column and group_column not in table.columns:
        log.info("%s: no %r column; splitting without groups", csv_path, group_column)
        group_column = None
    if table.empty:
        raise DataError(f"{csv_path}: no rows (a header and one row per image are expected)")

    def row_no(index: int) -> int:
        # Row numbers as a user sees them in an editor or spreadsheet: the header is row 1.
        return int(index) + 2

    allowed = {cfg.positive_label: 1, cfg.negative_label: 0}
    labels = table[cfg.label_column].str.strip()
    bad_labels = [
        f"row {row_no(i)}: label {value!r} is not one of {sorted(allowed)}"
        for i, value in labels.items()
        if value not in allowed
    ]
    if bad_labels:
        raise DataError(f"{csv_path}: {format_offenders(bad_labels)}")

    images = table[cfg.image_column].str.strip()
    empty = [f"row {row_no(i)}: empty {cfg.image_column!r}" for i, v in images.items() if not v]
    if empty:
        raise DataError(f"{csv_path}: {format_offenders(empty)}")

    paths = [Path(v) if Path(v).is_absolute() else root / v for v in images]
    resolved_root = root.resolve()
    resolved = [p.resolve() for p in paths]
    # Refused before anything else, and whatever data.skip_corrupt says: a row reaching outside
    # the data folder (`../../etc/passwd`, an absolute path, a link) is never skipped silently.
    refused = []
    for i, path, real in zip(table.index, paths, resolved, strict=True):
        shown = f"row {row_no(i)}: {images[i]!r}"
        if not cfg.allow_outside_root and not real.is_relative_to(resolved_root):
            refused.append(outside_root_message(shown, path, root))
    if refused:
        raise DataError(f"{csv_path}: {format_offenders(refused)}")
    missing = [
        f"row {row_no(i)}: file {images[i]!r} not found"
        for i, p in zip(table.index, paths, strict=False)
        if not p.is_file()
    ]
    if missing:
        raise DataError(f"{csv_path}: {format_offenders(missing)} (paths are relative to {root})")

    relpaths = [_relpath(p, resolved_root) for p in resolved]
    seen: dict[str, int] = {}
    repeated = []
    for i, rel in zip(table.index, relpaths, strict=False):
        if rel in seen:
            repeated.append(f"rows {seen[rel]} and {row_no(i)}: {rel!r} listed twice")
        else:
            seen[rel] = row_no(i)
    if repeated:
        raise DataError(f"{csv_path}: {format_offenders(repeated)} (each image must appear once)")

    if group_column:
        raw = table[group_column].str.strip()
        no_group = int((raw == "").sum())
        if no_group:
            log.warning(
                "%s: %d row(s) have an empty %r; each is treated as its own group",
                csv_path,
                no_group,
                group_column,
            )
        groups: list[str | None] = [g if g else f"__row{row_no(i)}" for i, g in raw.items()]
    else:
        groups = [None] * len(table)

    frame = pd.DataFrame(
        {
            "path": [str(p) for p in resolved],
            "relpath": relpaths,
            "label": [allowed[v] for v in labels],
            "group": pd.Series(groups, dtype=object),
        }
    )
    frame["label"] = frame["label"].astype(int)
    return frame


def check_classes(frame: pd.DataFrame, cfg: DataConfig, source: str, layout: str) -> None:
    """Refuse a dataset in which a class has no images (also rerun after skipping files)."""
    counts = {
        name: int((frame["label"] == value).sum())
        for name, value in ((cfg.positive_label, 1), (cfg.negative_label, 0))
    }
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        where = {cfg.positive_label: cfg.positive_dir, cfg.negative_label: cfg.negative_dir}
        detail = ", ".join(
            f"class {name!r}" + ("" if layout == "metadata" else f" (folder {where[name]}/)")
            for name in empty
        )
        raise DataError(f"{source}: {detail} has no images; both classes need images (found {counts})")
