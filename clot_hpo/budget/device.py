"""The VRAM budget trials are sized against: from the config, else NVML, else none (CPU).

NVML (package ``nvidia-ml-py``, module ``pynvml``) is read without TensorFlow, so the budget
can be known before TensorFlow creates its CUDA context.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from clot_hpo.budget.estimator import GiB, format_bytes
from clot_hpo.errors import ConfigError

log = logging.getLogger(__name__)

BudgetSource = Literal["config", "nvml", "none"]
DEFAULT_SAFETY_MARGIN = 0.1


@dataclass(frozen=True)
class VramBudget:
    """How much GPU memory one trial may use.

    Attributes:
        total_bytes: the card's memory (config) or its free memory (NVML); ``None``: no limit.
        margin: fraction of ``total_bytes`` held back for what the estimate cannot see.
        source: ``"config"`` (``budget.vram_gb``), ``"nvml"`` or ``"none"``.
        detail: where the number came from (GPU name, or why there is no limit).
    """

    total_bytes: int | None
    margin: float = DEFAULT_SAFETY_MARGIN
    source: BudgetSource = "none"
    detail: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1:
            raise ConfigError(f"`safety_margin` must satisfy 0 <= margin < 1, but got {self.margin!r}")
        if self.total_bytes is not None and self.total_bytes <= 0:
            raise ConfigError(f"the VRAM budget must be positive, but got {self.total_bytes!r} bytes")

    @classmethod
    def from_gb(
        cls, vram_gb: float, margin: float = DEFAULT_SAFETY_MARGIN, *, detail: str = ""
    ) -> VramBudget:
        """A budget of ``vram_gb`` GiB, as ``budget.vram_gb`` gives it."""
        if isinstance(vram_gb, bool) or not isinstance(vram_gb, (int, float)) or not vram_gb > 0:
            raise ConfigError(f"`vram_gb` must be a positive number of GiB, but got {vram_gb!r}")
        return cls(total_bytes=int(vram_gb * GiB), margin=margin, source="config", detail=detail)

    @classmethod
    def unlimited(cls, detail: str = "", margin: float = DEFAULT_SAFETY_MARGIN) -> VramBudget:
        """No VRAM limit (no GPU seen): every configuration runs as sampled."""
        return cls(total_bytes=None, margin=margin, source="none", detail=detail)

    @property
    def limited(self) -> bool:
        """Whether there is a limit at all."""
        return self.total_bytes is not None

    @property
    def usable_bytes(self) -> int | None:
        """``total_bytes`` less the safety margin; ``None`` when there is no limit."""
        if self.total_bytes is None:
            return None
        return int(self.total_bytes * (1.0 - self.margin))

    def describe(self) -> str:
        """One line for logs and trial records."""
        if self.total_bytes is None:
            why = f" ({self.detail})" if self.detail else ""
            return f"no VRAM limit{why}: trials run at their sampled batch size"
        origin = {"config": "budget.vram_gb", "nvml": "NVML free memory"}[self.source]
        detail = f", {self.detail}" if self.detail else ""
        return (
            f"VRAM budget {format_bytes(self.usable_bytes)} usable = {format_bytes(self.total_bytes)} "
            f"from {origin}{detail} less a {self.margin:.0%} safety margin"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields plus ``usable_bytes``."""
        return {
            "total_bytes": self.total_bytes,
            "usable_bytes": self.usable_bytes,
            "margin": self.margin,
            "source": self.source,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class NvmlReading:
    """What NVML says about one GPU."""

    index: int
    name: str
    free_bytes: int
    total_bytes: int


def _physical_index(gpu_index: int) -> int | str:
    """Map a CUDA-visible index to NVML's numbering through ``CUDA_VISIBLE_DEVICES``.

    TensorFlow counts only the visible GPUs; NVML counts all of them. Entries may be
    indices or ``GPU-<uuid>`` strings (returned as such).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        return gpu_index
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if gpu_index >= len(entries):
        raise ConfigError(
            f"`budget.gpu_index` must name a visible GPU (0..{len(entries) - 1} with "
            f"CUDA_VISIBLE_DEVICES={visible!r}), but got {gpu_index}"
        )
    entry = entries[gpu_index]
    return int(entry) if entry.isdigit() else entry


def read_nvml(gpu_index: int) -> NvmlReading | None:
    """Free and total memory of GPU ``gpu_index`` from NVML; ``None`` without a driver or GPU.

    Raises:
        ConfigError: GPUs exist but ``gpu_index`` names none of them.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return None  # GPUs hidden on purpose: TensorFlow will not see any either.
    try:
        import pynvml
    except ImportError:
        log.debug("pynvml (nvidia-ml-py) is not installed")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:  # no driver, no GPU
        log.debug("NVML unavailable: %s", exc)
        return None
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            return None
        physical = _physical_index(gpu_index)
        if isinstance(physical, str):
            handle = pynvml.nvmlDeviceGetHandleByUUID(physical)
        else:
            if physical >= count:
                raise ConfigError(
                    f"`budget.gpu_index` must be below the number of GPUs ({count}), but got {gpu_index}"
                )
            handle = pynvml.nvmlDeviceGetHandleByIndex(physical)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        if isinstance(name, bytes):  # older nvidia-ml-py returns bytes
            name = name.decode()
        return NvmlReading(
            index=gpu_index, name=str(name), free_bytes=int(memory.free), total_bytes=int(memory.total)
        )
    except pynvml.NVMLError as exc:
        log.debug("NVML query failed: %s", exc)
        return None
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def detect_budget(cfg: Any, *, nvml_reader: Callable[[int], NvmlReading | None] = read_nvml) -> VramBudget:
    """The budget of ``cfg`` (a :class:`clot_hpo.config.BudgetConfig`).

    ``cfg.vram_gb`` wins; else NVML's free memory of ``cfg.gpu_index``; else no limit.
    ``cfg.safety_margin`` applies to either number.

    Args:
        cfg: the config's ``budget`` section.
        nvml_reader: reads one GPU (replaced in tests).
    """
    margin = float(cfg.safety_margin)
    if cfg.vram_gb is not None:
        return VramBudget.from_gb(float(cfg.vram_gb), margin)
    reading = nvml_reader(int(cfg.gpu_index))
    if reading is None:
        return VramBudget.unlimited("no budget.vram_gb and NVML sees no GPU", margin)
    return VramBudget(
        total_bytes=reading.free_bytes,
        margin=margin,
        source="nvml",
        detail=f"GPU {reading.index} {reading.name}, {format_bytes(reading.total_bytes)} total",
    )
