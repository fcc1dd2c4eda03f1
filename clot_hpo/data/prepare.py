"""One call that turns a data folder into a validated, split, leakage-checked dataset.

``prepare_data`` runs scan -> validate -> split -> leakage and saves, in ``out_dir``:

- ``split_manifest.csv``: ``relpath,label,split[,group],sha256`` (label 1 = positive/clot;
  ``sha256`` is the file's content hash, the image's key in every trial's predictions files);
- ``data_report.json``: counts, digest, skipped files and the leakage report;
- ``image_index.csv``: the hash cache that makes reruns cheap;
- ``shared/split_manifest.csv`` and ``shared/data_report.json``: what may leave the machine
  (MLflow gets these unless ``tracking.log_manifest: full``): each image's key is its content
  hash, and no file name, path or group id is written, since those can carry patient
  identifiers. Counts, digest, grouping and the leakage report (by key) are kept.

DICOM files carry their patient: when the data has no group column, the split groups the
DICOM files by a salted hash of their ``PatientID`` (:func:`group_by_patient`), never by the
ID itself, and the report counts patients per split.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clot_hpo.config.schema import DataConfig
from clot_hpo.data.dicom import DicomSettings, load_salt, patient_group, read_patient_id
from clot_hpo.data.leakage import LeakageReport, find_leakage
from clot_hpo.data.scan import check_classes, scan_dataset
from clot_hpo.data.split import SPLITS, assign_splits, split_counts
from clot_hpo.data.synthetic import make_synthetic, written_by_older_generator
from clot_hpo.data.validate import CACHE_NAME, validate_images
from clot_hpo.errors import DataError
from clot_hpo.util import first_line

log = logging.getLogger(__name__)

MANIFEST_NAME = "split_manifest.csv"
REPORT_NAME = "data_report.json"
SHARED_DIR = "shared"
MANIFEST_COLUMNS = ["path", "relpath", "label", "group", "split", "sha256"]
_PROGRESS_MIN_IMAGES = 200


@dataclass
class PreparedData:
    """A dataset ready for training: every trial of a study uses exactly this.

    Attributes:
        manifest: one row per usable image: ``path`` (absolute), ``relpath``, ``label``
            (1 = positive/clot, 0 = negative), ``group`` (str or None), ``split``, ``sha256``
            (the file's content hash: an image's key in predictions files, never its path).
        manifest_path: the saved ``split_manifest.csv``.
        digest: sha256 over the sorted (relpath, file sha256, label) triples: the same
            data gives the same digest, whatever the split.
        counts: images per split and class name, e.g. ``counts["train"]["positive"]``.
        leakage: duplicates that cross splits.
        skipped: ``(path, reason)`` of every image left out by ``skip_corrupt``.
        report_path: the saved ``data_report.json``.
        root: the data folder.
        layout: ``folders`` or ``metadata``.
        grouped: whether the split kept groups together.
        shared_manifest_path: the manifest without names (``shared/``).
        group_source: where the groups came from (``column`` or ``dicom PatientID (salted
            hash)``; None when ungrouped).
        patients: groups per split, in all and in several splits (None when ungrouped).
    """

    manifest: pd.DataFrame
    manifest_path: Path
    digest: str
    counts: dict[str, dict[str, int]]
    leakage: LeakageReport
    skipped: list[tuple[str, str]]
    report_path: Path
    root: Path = field(default_factory=Path)
    layout: str = "folders"
    grouped: bool = False
    shared_manifest_path: Path | None = None
    group_source: str | None = None
    patients: dict[str, int] | None = None

    def tracked_manifest(self, mode: str = "keys") -> Path:
        """The manifest to hand to tracking: ``keys`` (no names, the default) or ``full``.

        The ``keys`` one lies in ``shared/`` beside its own ``data_report.json``.
        """
        if mode not in ("keys", "full"):
            raise ValueError(f"mode must be 'keys' or 'full', but got {mode!r}")
        if mode == "full" or self.shared_manifest_path is None:
            return self.manifest_path
        return self.shared_manifest_path

    def subset(self, split: str) -> pd.DataFrame:
        """The manifest rows of one split (``train``, ``val`` or ``test``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, but got {split!r}")
        return self.manifest[self.manifest["split"] == split].reset_index(drop=True)

    def paths(self, split: str) -> list[str]:
        """Absolute image paths of one split, in manifest order."""
        return [str(path) for path in self.subset(split)["path"]]

    def labels(self, split: str) -> np.ndarray:
        """Labels (0/1, int) of one split, in manifest order."""
        return np.asarray(self.subset(split)["label"], dtype=np.int64)


def dataset_digest(frame: pd.DataFrame) -> str:
    """sha256 over sorted ``relpath``, file ``sha256`` and ``label``."""
    digest = hashlib.sha256()
    for rel, sha, label in sorted(zip(frame["relpath"], frame["sha256"], frame["label"], strict=False)):
        digest.update(f"{rel}\t{sha}\t{int(label)}\n".encode())
    return digest.hexdigest()


def _ensure_data(cfg: DataConfig, seed: int) -> Path:
    root = Path(cfg.path)
    # An existing folder is used as it is (it may be a set made with other parameters, or one
    # that another worker is writing right now), except one written by an older version of the
    # generator: that one draws other images and is replaced. Other data is never touched.
    if root.exists() and (cfg.synthetic is None or not written_by_older_generator(root)):
        return root
    if cfg.synthetic is None:
        raise DataError(
            f"{root}: data folder not found (set data.path, or create a demo set with "
            f"`clot-hpo make-synthetic {root}`)"
        )
    log.info(
        "synthetic demo dataset at %s (%d images per class, %d px, difficulty %s, seed %d; "
        "synthetic, for demonstration only)",
        root,
        cfg.synthetic.n_per_class,
        cfg.synthetic.image_size,
        cfg.synthetic.difficulty,
        seed,
    )
    make_synthetic(
        root,
        n_per_class=cfg.synthetic.n_per_class,
        image_size=cfg.synthetic.image_size,
        difficulty=cfg.synthetic.difficulty,
        seed=seed,
    )
    return root


def prepare_data(cfg: DataConfig, *, seed: int, out_dir: Path, progress: bool = True) -> PreparedData:
    """Scan, validate, split and leakage-check a dataset, saving manifest and report.

    Args:
        cfg: the ``data`` section of the experiment config.
        seed: the split's seed (same seed and data -> same split).
        out_dir: where ``split_manifest.csv``, ``data_report.json`` and the hash cache go.
        progress: show a progress bar while checking many images.

    Raises:
        DataError: the data is missing or unusable (see :mod:`clot_hpo.data.scan`,
            :mod:`~clot_hpo.data.validate`, :mod:`~clot_hpo.data.split`), or duplicates cross
            splits and ``cfg.fail_on_leakage`` is set.
    """
    root = _ensure_data(cfg, seed)
    scanned = scan_dataset(cfg, root)
    layout, source = scanned.attrs.get("layout", "folders"), scanned.attrs.get("source", str(root))
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"{out_dir}: cannot create the output folder ({exc.strerror}); choose another with --out"
        ) from exc

    checked = validate_images(
        scanned,
        skip_corrupt=cfg.skip_corrupt,
        cache_path=out_dir / CACHE_NAME,
        progress=progress and len(scanned) >= _PROGRESS_MIN_IMAGES,
        max_pixels=cfg.max_pixels,
        memory_bytes=cfg.decode_memory_mb * 2**20,
        dicom=DicomSettings.from_config(cfg.dicom),
    )
    frame = checked.frame
    if checked.skipped:
        # Skipping may have emptied a class.
        check_classes(frame, cfg, source, layout)
    frame, group_source = group_by_patient(frame, root, out_dir)

    names = {1: cfg.positive_label, 0: cfg.negative_label}
    split = assign_splits(
        frame,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=seed,
        class_names=names,
        group_name="DICOM PatientID" if group_source.startswith("dicom") else cfg.group_column or "group",
    )
    grouped = bool(split.attrs.get("grouped_split", False))
    leakage = find_leakage(split, max_distance=cfg.near_duplicate_max_distance)
    digest = dataset_digest(split)
    counts = split_counts(split, names)

    manifest = split[MANIFEST_COLUMNS].reset_index(drop=True)
    manifest_path = out_dir / MANIFEST_NAME
    columns = ["relpath", "label", "split"] + (["group"] if grouped else []) + ["sha256"]
    manifest[columns].to_csv(manifest_path, index=False, lineterminator="\n")

    report_path = out_dir / REPORT_NAME
    report = _report(
        cfg, root, layout, source, seed, grouped, counts, digest, manifest_path, checked.skipped, leakage
    )
    report["group_source"] = group_source if grouped else None
    if group_source != "column":
        report["group_column"] = None
    report["patients"] = patient_counts(split) if grouped else None
    # The leakage report counts patients too: a patient in two splits is leakage of its own.
    report["leakage"]["patients"] = report["patients"]
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    shared_manifest_path = _write_shared(out_dir / SHARED_DIR, manifest, report)

    total = {s: sum(c.values()) for s, c in counts.items()}
    log.info(
        "data: %d images (train %d, val %d, test %d%s), digest %s, manifest %s",
        len(manifest),
        total["train"],
        total["val"],
        total["test"],
        ", grouped" if grouped else "",
        digest[:12],
        manifest_path,
    )
    if leakage.has_leakage:
        if cfg.fail_on_leakage:
            raise DataError(f"{leakage.error_message()}; report: {report_path}")
        log.warning("leakage: %s", first_line(leakage.summary()))
    return PreparedData(
        manifest=manifest,
        manifest_path=manifest_path,
        digest=digest,
        counts=counts,
        leakage=leakage,
        skipped=checked.skipped,
        report_path=report_path,
        root=root,
        layout=layout,
        grouped=grouped,
        shared_manifest_path=shared_manifest_path,
        group_source=group_source if grouped else None,
        patients=report["patients"],
    )


def group_by_patient(frame: pd.DataFrame, root: Path, out_dir: Path) -> tuple[pd.DataFrame, str]:
    """Group DICOM rows by a salted hash of their PatientID when the data has no groups.

    The salt is a secret kept beside the data (``DATA/.clot-hpo/patient_salt``, else in
    ``out_dir`` when the data folder is read-only), so every run on this data gets the same
    pseudonyms and split; without the salt a pseudonym cannot be checked against a guessed
    ID. Files without a PatientID, and PNG/JPEG files, stay their own group.

    Returns:
        The frame (with ``group`` filled in when it was grouped by patient) and where the
        groups came from: ``column``, ``dicom PatientID (salted hash)`` or ``none``.
    """
    if "group" in frame.columns and frame["group"].notna().any():
        return frame, "column"
    formats = frame["format"] if "format" in frame.columns else pd.Series([""] * len(frame))
    dicom_rows = [i for i, fmt in zip(frame.index, formats, strict=True) if fmt == "DICOM"]
    ids = {i: read_patient_id(frame.at[i, "path"]) for i in dicom_rows}
    if not any(ids.values()):
        return frame, "none"
    try:
        salt = load_salt(root / ".clot-hpo")
    except OSError:  # a read-only data folder: the salt lives with this run's output
        salt = load_salt(out_dir)
    out = frame.copy()
    out["group"] = pd.Series(
        [patient_group(pid, salt) if (pid := ids.get(i)) else None for i in frame.index],
        index=frame.index,
        dtype=object,
    )
    no_id = sum(1 for i in dicom_rows if not ids[i]) + len(frame) - len(dicom_rows)
    if no_id:
        log.warning("%d image(s) have no DICOM PatientID; each is treated as its own patient", no_id)
    return out, "dicom PatientID (salted hash)"


def patient_counts(split: pd.DataFrame) -> dict[str, int]:
    """Distinct groups (patients) per split, in all, and how many sit in more than one split."""
    # A row without a group is its own patient, as in the split.
    pairs = zip(split.index, split["group"], strict=True)
    groups = [g if isinstance(g, str) and g else f"__row{i}" for i, g in pairs]
    splits_of: dict[str, set[str]] = {}
    for group, name in zip(groups, split["split"], strict=True):
        splits_of.setdefault(group, set()).add(str(name))
    per_split = {name: sum(name in names for names in splits_of.values()) for name in SPLITS}
    several = sum(len(names) > 1 for names in splits_of.values())
    return {**per_split, "all": len(splits_of), "in_several_splits": several}


def _write_shared(folder: Path, manifest: pd.DataFrame, report: dict[str, Any]) -> Path:
    """Write the pseudonymised manifest and report into ``folder``; returns the manifest's path.

    A key is the file's sha256: it names the picture (and lines up with every trial's
    predictions file) without naming the patient; a group id would, and is left out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    keys = manifest[["sha256", "label", "split"]].rename(columns={"sha256": "key"})
    path = folder / MANIFEST_NAME
    keys.to_csv(path, index=False, lineterminator="\n")
    key_of = dict(zip(manifest["relpath"], manifest["sha256"], strict=True))
    shared = {
        k: v for k, v in report.items() if k not in ("data_path", "source", "manifest", "skipped", "leakage")
    }
    shared["skipped"] = [{"reason": item["reason"]} for item in report["skipped"]]
    leakage = dict(report["leakage"])
    for kind in ("exact_pairs", "near_pairs"):
        leakage[kind] = [_pair_by_key(pair, key_of) for pair in leakage[kind]]
    shared["leakage"] = leakage
    (folder / REPORT_NAME).write_text(json.dumps(shared, indent=2) + "\n", encoding="utf-8")
    return path


def _pair_by_key(pair: dict[str, Any], key_of: dict[str, str]) -> dict[str, Any]:
    out = {k: v for k, v in pair.items() if k not in ("path_a", "path_b")}
    out["key_a"], out["key_b"] = key_of.get(pair["path_a"], ""), key_of.get(pair["path_b"], "")
    return out


def _report(
    cfg: DataConfig,
    root: Path,
    layout: str,
    source: str,
    seed: int,
    grouped: bool,
    counts: dict[str, dict[str, int]],
    digest: str,
    manifest_path: Path,
    skipped: list[tuple[str, str]],
    leakage: LeakageReport,
) -> dict[str, Any]:
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_path": str(root.resolve()),
        "layout": layout,
        "source": source,
        "seed": seed,
        "val_fraction": cfg.val_fraction,
        "test_fraction": cfg.test_fraction,
        "grouped": grouped,
        "group_column": cfg.group_column if grouped else None,
        "classes": {"1": cfg.positive_label, "0": cfg.negative_label},
        "n_images": sum(sum(c.values()) for c in counts.values()),
        "counts": counts,
        "digest": digest,
        "manifest": str(manifest_path),
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "leakage": leakage.to_dict(),
    }
