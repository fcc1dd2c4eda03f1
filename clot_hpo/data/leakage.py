"""Exact and near-duplicate images shared between splits.

Duplicates across train/val/test inflate every reported metric (the model has seen the test
image), so they are reported rather than hidden:

- **exact**: the same decoded pixels (so a PNG re-saved with other compression counts);
- **near**: perceptual hashes (``imagehash.phash``, 64 bits) within a Hamming distance of
  ``max_distance`` (resized, re-encoded or slightly edited copies).

Near-duplicate search compares packed 64-bit hashes of one split against another with
vectorised XOR + popcount in blocks, so 20k images take well under a second.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from clot_hpo.data.scan import format_offenders
from clot_hpo.data.split import SPLITS

MAX_PAIRS_KEPT = 10_000
"""Pairs of each kind stored in a report; counts stay exact beyond it."""
_BLOCK = 256  # rows per block: the XOR temporary is _BLOCK x n_other x 8 bytes


@dataclass(frozen=True)
class DuplicatePair:
    """Two images in different splits that are (nearly) the same picture."""

    kind: str  # "exact" or "near"
    path_a: str
    split_a: str
    label_a: int
    path_b: str
    split_b: str
    label_b: int
    distance: int  # phash Hamming distance (0 for exact duplicates)

    def describe(self) -> str:
        """``a.png (train) ~ b.png (test), distance 2``."""
        tail = "identical" if self.kind == "exact" else f"distance {self.distance}"
        conflict = ", labels differ" if self.label_a != self.label_b else ""
        return f"{self.path_a} ({self.split_a}) ~ {self.path_b} ({self.split_b}), {tail}{conflict}"


@dataclass
class LeakageReport:
    """Duplicates that cross splits.

    Attributes:
        exact_pairs: identical images in two splits (at most :data:`MAX_PAIRS_KEPT`).
        near_pairs: perceptually near-identical images in two splits (not also exact).
        n_exact: number of cross-split exact pairs (exact even when the list is capped).
        n_near: number of cross-split near pairs.
        max_distance: the Hamming distance threshold used for near duplicates.
        n_images: images examined.
        within_split_exact: exact duplicate pairs inside one split (not leakage, but they
            over-weight those images).
    """

    exact_pairs: list[DuplicatePair] = field(default_factory=list)
    near_pairs: list[DuplicatePair] = field(default_factory=list)
    n_exact: int = 0
    n_near: int = 0
    max_distance: int = 4
    n_images: int = 0
    within_split_exact: int = 0

    @property
    def has_leakage(self) -> bool:
        """Whether any duplicate crosses splits."""
        return self.n_exact + self.n_near > 0

    @property
    def pairs(self) -> list[DuplicatePair]:
        """Exact pairs, then near pairs."""
        return [*self.exact_pairs, *self.near_pairs]

    def by_split_pair(self) -> dict[str, dict[str, int]]:
        """Counts per split pair: ``{"train-test": {"exact": 1, "near": 3}, ...}``."""
        out: dict[str, dict[str, int]] = {}
        for pair in self.pairs:
            key = f"{pair.split_a}-{pair.split_b}"
            out.setdefault(key, {"exact": 0, "near": 0})[pair.kind] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the report file and MLflow)."""
        return {
            "has_leakage": self.has_leakage,
            "n_images": self.n_images,
            "max_distance": self.max_distance,
            "n_exact": self.n_exact,
            "n_near": self.n_near,
            "within_split_exact": self.within_split_exact,
            "by_split_pair": self.by_split_pair(),
            "exact_pairs": [asdict(p) for p in self.exact_pairs],
            "near_pairs": [asdict(p) for p in self.near_pairs],
        }

    def summary(self, limit: int = 5) -> str:
        """A few lines for a terminal: counts, then the first pairs."""
        if not self.has_leakage:
            text = (
                f"no duplicates across splits among {self.n_images} images "
                f"(exact, and perceptual hash distance <= {self.max_distance})"
            )
        else:
            splits = ", ".join(
                f"{k}: {v['exact']} exact, {v['near']} near" for k, v in sorted(self.by_split_pair().items())
            )
            lines = [
                f"{self.n_exact} exact and {self.n_near} near-duplicate pair(s) cross splits "
                f"(perceptual hash distance <= {self.max_distance}; {splits})"
            ]
            shown = self.pairs[:limit]
            lines += [f"  {p.describe()}" for p in shown]
            rest = self.n_exact + self.n_near - len(shown)
            if rest > 0:
                lines.append(f"  and {rest} more")
            text = "\n".join(lines)
        if self.within_split_exact:
            text += f"\n{self.within_split_exact} exact duplicate pair(s) inside a single split"
        return text

    def error_message(self) -> str:
        """One line for ``--fail-on-leakage``."""
        listed = [p.describe() for p in self.pairs]
        return (
            f"duplicate images cross splits ({self.n_exact} exact, {self.n_near} near, "
            f"perceptual hash distance <= {self.max_distance}): {format_offenders(listed)} "
            "(remove the copies, give copies the same group, or drop --fail-on-leakage)"
        )


def _phash_to_uint64(hexes: pd.Series) -> np.ndarray:
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def find_leakage(
    frame: pd.DataFrame, *, max_distance: int = 4, path_column: str = "relpath"
) -> LeakageReport:
    """Find duplicates across splits.

    Args:
        frame: rows with ``split``, ``label``, ``pixel_sha256``, ``phash`` and ``path_column``
            (as returned by :func:`clot_hpo.data.validate.validate_images` plus a split).
        max_distance: largest phash Hamming distance that counts as a near duplicate
            (0 disables near-duplicate search beyond identical hashes).
        path_column: which column names the images in the report.

    Returns:
        The :class:`LeakageReport`.
    """
    report = LeakageReport(max_distance=max_distance, n_images=len(frame))
    if frame.empty:
        return report
    data = frame.sort_values(path_column, kind="stable").reset_index(drop=True)
    split_rank = {s: i for i, s in enumerate(SPLITS)}
    paths = data[path_column].to_numpy(dtype=str)
    splits = data["split"].to_numpy(dtype=str)
    labels = data["label"].to_numpy(dtype=int)

    def make(kind: str, i: int, j: int, distance: int) -> DuplicatePair:
        if (split_rank.get(splits[i], 9), paths[i]) > (split_rank.get(splits[j], 9), paths[j]):
            i, j = j, i
        return DuplicatePair(
            kind, paths[i], splits[i], int(labels[i]), paths[j], splits[j], int(labels[j]), distance
        )

    # Exact: group identical pixel hashes.
    exact_keys: set[tuple[int, int]] = set()
    for _, members in data.groupby("pixel_sha256", sort=True).indices.items():
        if len(members) < 2:
            continue
        for i, j in itertools.combinations(sorted(members), 2):
            if splits[i] == splits[j]:
                report.within_split_exact += 1
                continue
            report.n_exact += 1
            exact_keys.add((i, j))
            if len(report.exact_pairs) < MAX_PAIRS_KEPT:
                report.exact_pairs.append(make("exact", i, j, 0))

    # Near: blockwise Hamming distances between every two splits.
    hashes = _phash_to_uint64(data["phash"])
    present = [s for s in SPLITS if (splits == s).any()]
    for sa, sb in itertools.combinations(present, 2):
        ia = np.flatnonzero(splits == sa)
        ib = np.flatnonzero(splits == sb)
        hb = hashes[ib]
        for start in range(0, ia.size, _BLOCK):
            block = ia[start : start + _BLOCK]
            dist = np.bitwise_count(hashes[block][:, None] ^ hb[None, :])
            rows, cols = np.nonzero(dist <= max_distance)
            for r, c in zip(rows, cols, strict=False):
                i, j = int(block[r]), int(ib[c])
                key = (min(i, j), max(i, j))
                if key in exact_keys:
                    continue
                report.n_near += 1
                if len(report.near_pairs) < MAX_PAIRS_KEPT:
                    report.near_pairs.append(make("near", i, j, int(dist[r, c])))

    def order(p: DuplicatePair) -> tuple[int, int, int, str, str]:
        return (p.distance, split_rank.get(p.split_a, 9), split_rank.get(p.split_b, 9), p.path_a, p.path_b)

    report.exact_pairs.sort(key=order)
    report.near_pairs.sort(key=order)
    return report
