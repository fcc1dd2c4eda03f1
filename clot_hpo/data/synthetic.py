"""A deterministic synthetic blood-clot dataset for the demo and the tests.

The images are synthetic and for demonstration only: they imitate the *structure* of the task
(bright contrast-filled vessels on textured tissue; a clot shows as a dark filling defect
ringed by contrast inside a locally distended vessel, which is cut off or dimmer beyond it) so
that the platform can be exercised end to end without the real Kaggle set, which cannot be
downloaded here. They carry no medical meaning.

The generator is tuned so that the task is learnable from random initialisation by a small
convolutional network in a few epochs, but not by global or linear features:

- the clot is one compact, consistently shaped local pattern (a dark core in a bright rim),
  placed at a random point of a random vessel, so no fixed pixel carries the label (a logistic
  regression on raw pixels stays near chance);
- every image gets a random brightness, contrast, noise level and tint, so mean intensity
  carries no label signal;
- both classes have one distended vessel segment (only a positive's holds a clot), and dark
  "distractor" blobs outside the vessels with the clot core's size and darkness; the number of
  dark blobs has the same distribution in both classes, so counting dark or bright spots, or
  the intensity histogram, tells little;
- images are grouped by "patient": the images of one patient share a vessel tree (jittered),
  so near-duplicate images exist within a group and grouped splitting matters.

``difficulty`` (0 to 1, or easy / medium / hard) scales the clot from large, high contrast,
with an abrupt cut-off and few distractors far from the vessels, down to small, faint, with
the vessel only dimmed beyond it and more distractors close to the vessels, with more noise.
``benchmarks/synthetic_difficulty.py`` measures what each level means for the three models.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import numbers
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import Progress
from scipy import ndimage

from clot_hpo.data.console import show_progress, stderr_console
from clot_hpo.errors import DataError

log = logging.getLogger(__name__)

MARKER = ".synthetic.json"
"""File written into a generated folder; lets a rerun recognise (and replace) its own output."""

IMAGES_PER_PATIENT = 4
_PROGRESS_MIN_IMAGES = 500
_GENERATOR_VERSION = 2  # bump whenever the same arguments would draw different images

DIFFICULTY_LEVELS: dict[str, float] = {"easy": 0.0, "medium": 0.5, "hard": 1.0}
"""Named difficulties accepted wherever a number in [0, 1] is."""

DEFAULT_DIFFICULTY = 0.0
"""What the demo uses: learnable from random initialisation in a few epochs."""


def resolve_difficulty(value: object) -> float:
    """A difficulty as a float in [0, 1], from a number or a name in :data:`DIFFICULTY_LEVELS`.

    Anything else (a value read from YAML or the command line) is refused with the reason.

    Raises:
        DataError: the value is neither a known name nor a number in [0, 1].
    """
    if isinstance(value, str):
        name = value.strip().lower()
        if name in DIFFICULTY_LEVELS:
            return DIFFICULTY_LEVELS[name]
        try:
            value = float(name)
        except ValueError:
            raise DataError(
                "difficulty must be a number in [0, 1] or one of "
                f"{', '.join(DIFFICULTY_LEVELS)}, but got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"difficulty must be a number in [0, 1], but got {value!r}")
    number = float(value)
    if not 0.0 <= number <= 1.0:  # also refuses NaN
        raise DataError(f"`0 <= difficulty <= 1` must hold, but got difficulty={number:g}")
    return number


@dataclass(frozen=True)
class _Vessel:
    """A quadratic Bezier centreline in unit coordinates and its width (fraction of size)."""

    p0: tuple[float, float]
    p1: tuple[float, float]
    p2: tuple[float, float]
    width: float

    def points(self, n: int, jitter: np.ndarray | None = None) -> np.ndarray:
        ctrl = np.array([self.p0, self.p1, self.p2], dtype=np.float64)
        if jitter is not None:
            ctrl = ctrl + jitter
        t = np.linspace(0.0, 1.0, n)[:, None]
        curve: np.ndarray = (1 - t) ** 2 * ctrl[0] + 2 * (1 - t) * t * ctrl[1] + t**2 * ctrl[2]
        return curve


def _edge_point(rng: np.random.Generator) -> tuple[float, float]:
    """A point on (slightly outside) the image border, so vessels cross the field of view."""
    side = rng.integers(4)
    u = float(rng.uniform(0.05, 0.95))
    return [(u, -0.05), (1.05, u), (u, 1.05), (-0.05, u)][side]


def _patient_vessels(rng: np.random.Generator) -> list[_Vessel]:
    """The vessel tree shared by every image of one synthetic patient."""
    vessels = []
    for i in range(int(rng.integers(2, 4))):
        a = _edge_point(rng)
        b = _edge_point(rng)
        while math.dist(a, b) < 0.7:
            b = _edge_point(rng)
        mid = (
            (a[0] + b[0]) / 2 + float(rng.normal(0, 0.2)),
            (a[1] + b[1]) / 2 + float(rng.normal(0, 0.2)),
        )
        # The first vessel is the main trunk; the others are narrower.
        width = float(rng.uniform(0.085, 0.11)) if i == 0 else float(rng.uniform(0.065, 0.09))
        vessels.append(_Vessel(a, mid, b, width))
    return vessels


def _soft_blob(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float
) -> np.ndarray:
    """An anti-aliased ellipse mask in [0, 1] (semi-axis ``rx`` along ``angle``)."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = xx - cx, yy - cy
    u = (dx * c + dy * s) / rx
    v = (-dx * s + dy * c) / ry
    r = np.sqrt(u * u + v * v)
    return np.clip((1.25 - r) / 0.5, 0.0, 1.0)


def _tube(size: int, pts: np.ndarray, width_px: float) -> tuple[np.ndarray, np.ndarray]:
    """A soft tube (values in [0, 1]) around a centreline, and the centreline's pixel mask."""
    ij = np.round(pts).astype(int)
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < size) & (ij[:, 1] >= 0) & (ij[:, 1] < size)
    mask = np.zeros((size, size), dtype=bool)
    mask[ij[ok, 1], ij[ok, 0]] = True
    if not mask.any():
        return np.zeros((size, size)), mask
    dist = ndimage.distance_transform_edt(~mask)
    return np.clip(width_px / 2 + 0.5 - dist, 0.0, 1.0), mask


def _lerp(easy: float, hard: float, d: float) -> float:
    return easy + (hard - easy) * d


@dataclass(frozen=True)
class _Settings:
    """What ``difficulty`` changes; sizes are fractions of the image side."""

    clot_length: float  # semi-axis of the distended segment along the vessel
    clot_across: float  # its semi-axis across the vessel
    rim_boost: float  # brightness of the distended segment relative to its vessel
    distal: tuple[float, float]  # vessel level beyond the clot, relative to before it
    darkness: tuple[float, float]  # how much darker than tissue a dark blob is
    n_dark: tuple[int, int]  # dark blobs per image (clot included), inclusive range
    gap: float  # least clearance between a distractor and the nearest vessel wall
    noise: tuple[float, float]  # sensor noise standard deviation
    texture: float  # tissue texture amplitude

    @classmethod
    def at(cls, d: float) -> _Settings:
        return cls(
            clot_length=_lerp(0.15, 0.08, d),
            clot_across=_lerp(0.11, 0.06, d),
            rim_boost=_lerp(1.35, 1.0, d),
            distal=(_lerp(0.0, 0.55, d), _lerp(0.15, 0.85, d)),
            darkness=(_lerp(55.0, 30.0, d), _lerp(75.0, 45.0, d)),
            n_dark=(1 + math.floor(d + 0.5), 2 + math.floor(2 * d + 0.5)),
            gap=_lerp(0.10, 0.01, d),
            noise=(_lerp(2.0, 4.0, d), _lerp(5.0, 9.0, d)),
            texture=_lerp(12.0, 18.0, d),
        )


def _render(
    rng: np.random.Generator, size: int, vessels: list[_Vessel], positive: bool, s: _Settings
) -> np.ndarray:
    """One RGB uint8 image of a patient's vessel tree, with a clot when ``positive``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    n_pts = max(64, 4 * size)

    # Tissue: smooth low-frequency texture.
    coarse = rng.normal(0, 1, (6, 6))
    texture = ndimage.zoom(coarse, size / 6, order=3)[:size, :size]
    img = s.texture * texture

    centrelines = [
        (v.points(n_pts, jitter=rng.normal(0, 0.02, (3, 2))) * (size - 1), v.width * size) for v in vessels
    ]
    # Each vessel has its own opacification level in both classes, so a dim vessel alone
    # is no cue.
    levels = rng.uniform(0.75, 1.0, len(centrelines))
    contrast = float(rng.uniform(60, 95))
    # Dark blobs: a clot's dark core and the distractors share one size and darkness
    # distribution, and the number of dark blobs has the same distribution in both classes,
    # so neither counting dark spots nor their size or darkness tells the classes apart:
    # only the context of one (inside a vessel, ringed by contrast) does.
    n_dark = int(rng.integers(s.n_dark[0], s.n_dark[1] + 1))
    darkness = float(rng.uniform(*s.darkness))
    shapes = [
        (
            s.clot_length * size * float(rng.uniform(0.85, 1.15)),
            s.clot_across * size * float(rng.uniform(0.85, 1.15)),
        )
        for _ in range(n_dark)
    ]

    # Both classes have one distended vessel segment, drawn alike; in a positive it holds the
    # clot and the vessel beyond it is cut off. The bright distension alone is no cue, and
    # the histograms of the classes stay alike (a negative's extra dark blob lies elsewhere).
    which = int(rng.integers(len(centrelines)))
    pts, _width = centrelines[which]
    # Far enough from the border that the whole segment is in the field of view.
    inside = np.flatnonzero(
        (pts[:, 0] > 0.25 * size)
        & (pts[:, 0] < 0.75 * size)
        & (pts[:, 1] > 0.25 * size)
        & (pts[:, 1] < 0.75 * size)
    )
    if inside.size:
        k = int(rng.choice(inside))
    else:  # a vessel that only grazes the centre: its point nearest the centre
        k = int(np.argmin(np.hypot(pts[:, 0] - size / 2, pts[:, 1] - size / 2)))
    k = min(max(k, 1), len(pts) - 2)
    tail_is_distal = bool(rng.integers(2))
    distal_level = float(rng.uniform(*s.distal))
    length, across = (
        s.clot_length * size * float(rng.uniform(0.85, 1.15)),
        s.clot_across * size * float(rng.uniform(0.85, 1.15)),
    )
    if positive:
        shapes.pop()  # the clot is one of the dark blobs

    # Vessels: soft tubes around the (jittered) centrelines. Beyond a clot the vessel carries
    # little contrast agent (at low difficulty none: an abrupt cut-off).
    lumen = np.zeros((size, size))
    centre = np.zeros((size, size), dtype=bool)
    for i, (line, width) in enumerate(centrelines):
        if positive and i == which:
            proximal, distal = (line[: k + 1], line[k:]) if tail_is_distal else (line[k:], line[: k + 1])
            parts = [(proximal, levels[i]), (distal, levels[i] * distal_level)]
        else:
            parts = [(line, levels[i])]
        for part, level in parts:
            tube, mask = _tube(size, part, width)
            centre |= mask
            lumen = np.maximum(lumen, level * tube)

    tangent = pts[k + 1] - pts[k - 1]
    angle = math.atan2(tangent[1], tangent[0])
    bulge = _soft_blob(yy, xx, pts[k, 1], pts[k, 0], ry=across, rx=length, angle=angle)
    lumen = np.maximum(lumen, levels[which] * s.rim_boost * bulge)
    # The "polo mint" of CT angiography: a bright rim of contrast outlines the clot's dark
    # core. One compact, consistently shaped pattern, which convolution filters pick up
    # quickly.
    plug = (
        _soft_blob(yy, xx, pts[k, 1], pts[k, 0], ry=across * 0.5, rx=length * 0.5, angle=angle)
        if positive
        else None
    )
    img += contrast * lumen
    if plug is not None:
        # The core is exactly as dark as a distractor blob (tissue minus `darkness`).
        img -= plug * (contrast * lumen + darkness)
    dist_to_vessel = ndimage.distance_transform_edt(~centre) if centre.any() else np.full((size, size), 1e9)
    half_wall = max(w for _, w in centrelines) / 2

    for length, across in shapes:
        ry, rx = across * 0.5, length * 0.5
        clearance = max(rx, ry) * 1.25 + half_wall + s.gap * size
        for _attempt in range(30):
            cy, cx = rng.uniform(0.1, 0.9, 2) * size
            if dist_to_vessel[int(cy), int(cx)] > clearance:
                break
        blob = _soft_blob(yy, xx, cy, cx, ry=ry, rx=rx, angle=float(rng.uniform(0, math.pi)))
        img -= blob * darkness
    # A few faint bright specks (calcifications) in both classes.
    for _ in range(int(rng.integers(0, 3))):
        cy, cx = rng.uniform(0.05, 0.95, 2) * size
        img += _soft_blob(yy, xx, cy, cx, 1.2, 1.2, 0.0) * float(rng.uniform(20, 45))

    # Acquisition: random brightness and contrast per image (so mean intensity is no cue),
    # sensor noise and a mild tint.
    gain = float(rng.uniform(0.7, 1.3))
    base = float(rng.uniform(55, 165))
    img = base + gain * (img - img.mean())
    img += rng.normal(0, float(rng.uniform(*s.noise)), img.shape)
    tint = np.array([1.0, rng.uniform(0.88, 1.0), rng.uniform(0.82, 1.0)])
    rgb = img[:, :, None] * tint[None, None, :]
    return np.asarray(np.clip(np.round(rgb), 0, 255), dtype=np.uint8)


def _write_marker(out: Path, params: dict[str, object], *, complete: bool) -> None:
    # Written before the first image (so an interrupted run is still recognised as ours and
    # replaced next time) and again, complete, after the last.
    data = {**params, "complete": complete}
    (out / MARKER).write_text(json.dumps(data, sort_keys=True) + "\n", encoding="utf-8")


def written_by_older_generator(out: Path) -> bool:
    """Whether ``out`` was written by an older version of this generator (so draws other images)."""
    marker = _read_marker(out)
    if marker is None:
        return False
    version = marker.get("version", 1)
    return isinstance(version, int) and version < _GENERATOR_VERSION


def _read_marker(out: Path) -> dict[str, object] | None:
    try:
        data = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def make_synthetic(
    out: Path,
    *,
    n_per_class: int,
    image_size: int,
    seed: int,
    difficulty: float | str = DEFAULT_DIFFICULTY,
    progress: bool | None = None,
    prevalence: float = 0.5,
) -> Path:
    """Write a deterministic synthetic clot dataset in the Kaggle layout.

    Writes ``OUT/positive/*.png``, ``OUT/negative/*.png`` and ``OUT/metadata.csv`` (columns
    ``image`` = path relative to OUT, ``label`` in {positive, negative}, ``group`` = patient).
    The same arguments always give byte-identical files. The images are synthetic and for
    demonstration only.

    Args:
        out: the folder to create. A folder previously written by this function is replaced
            (or kept as is when the parameters match); any other non-empty folder is refused.
        n_per_class: images per class (at least 2).
        image_size: side length in pixels (16 to 1024).
        seed: random seed.
        difficulty: 0 (easy: a large, high-contrast clot, an abrupt cut-off, few distractors
            far from the vessels) to 1 (hard: a small, low-contrast clot, more distractors
            close to the vessels, more noise), or ``"easy"``, ``"medium"``, ``"hard"``.
        progress: show a progress bar; None shows one for large sets on a terminal.
        prevalence: the share of positive images, ``0 < prevalence < 1``: the set keeps its
            ``2 * n_per_class`` images, ``round(prevalence * 2 * n_per_class)`` of them positive
            (at least 2 of each class). 0.5 (the default) is the balanced set.

    Returns:
        ``out``.

    Raises:
        DataError: the arguments are out of range or ``out`` holds other files.
    """
    out = Path(out)
    if n_per_class < 2:
        raise DataError(f"`n_per_class >= 2` must hold, but got n_per_class={n_per_class}")
    if not 16 <= image_size <= 1024:
        raise DataError(f"`16 <= image_size <= 1024` must hold, but got image_size={image_size}")
    if not 0.0 < prevalence < 1.0:  # also refuses NaN
        raise DataError(f"`0 < prevalence < 1` must hold, but got prevalence={prevalence}")
    n_total = 2 * n_per_class
    n_positive = min(max(2, round(prevalence * n_total)), n_total - 2)
    level = resolve_difficulty(difficulty)
    settings = _Settings.at(level)
    params: dict[str, object] = {
        "n_per_class": int(n_per_class),
        "image_size": int(image_size),
        "seed": int(seed),
        "difficulty": level,
        "version": _GENERATOR_VERSION,
    }
    if n_positive != n_per_class:  # a balanced set's marker stays as before: its folder is kept
        params["prevalence"] = float(prevalence)
    if out.exists():
        if not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder")
        previous = _read_marker(out)
        if previous == {**params, "complete": True} and (out / "metadata.csv").is_file():
            log.info("synthetic dataset %s already exists with the same parameters; kept", out)
            return out
        if previous is None and any(out.iterdir()):
            raise DataError(
                f"{out}: folder exists, is not empty and was not written by make-synthetic; "
                "choose a new folder or remove it"
            )
        for name in ("positive", "negative", "metadata.csv", MARKER):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    (out / "positive").mkdir(parents=True, exist_ok=True)
    (out / "negative").mkdir(parents=True, exist_ok=True)
    _write_marker(out, params, complete=False)

    master = np.random.default_rng(seed)
    labels = np.array([1] * n_positive + [0] * (n_total - n_positive))
    master.shuffle(labels)
    n_patients = math.ceil(n_total / IMAGES_PER_PATIENT)
    # One independent stream per patient and per image keeps every image reproducible
    # on its own (and the output independent of how the loop is scheduled).
    patient_seeds = master.integers(0, 2**63 - 1, size=n_patients)
    image_seeds = master.integers(0, 2**63 - 1, size=n_total)

    show = progress if progress is not None else n_total >= _PROGRESS_MIN_IMAGES
    rows: list[tuple[str, str, str]] = []
    with Progress(console=stderr_console(), disable=not show_progress(show), transient=True) as bar:
        task = bar.add_task("generating synthetic images", total=n_total)
        for p in range(n_patients):
            vessels = _patient_vessels(np.random.default_rng(patient_seeds[p]))
            group = f"patient_{p:05d}"
            for i in range(p * IMAGES_PER_PATIENT, min((p + 1) * IMAGES_PER_PATIENT, n_total)):
                positive = bool(labels[i])
                pixels = _render(
                    np.random.default_rng(image_seeds[i]), image_size, vessels, positive, settings
                )
                cls = "positive" if positive else "negative"
                rel = f"{cls}/{group}_img{i:05d}.png"
                Image.fromarray(pixels).save(out / rel, format="PNG", optimize=False)
                rows.append((rel, cls, group))
                bar.advance(task)

    rows.sort()
    with (out / "metadata.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["image", "label", "group"])
        writer.writerows(rows)
    _write_marker(out, params, complete=True)
    return out
