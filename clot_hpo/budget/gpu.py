"""GPU habits of a training process: memory growth, mixed precision, out-of-memory detection.

TensorFlow is imported inside the functions: the study process never needs it, and importing
it there would create a CUDA context that takes memory from the trials.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from clot_hpo.errors import ConfigError
from clot_hpo.util import exception_chain

log = logging.getLogger(__name__)

MIXED_PRECISION_MODES = ("auto", "on", "off")
# Tensor cores (and fast float16) start with Volta, compute capability 7.0.
MIN_MIXED_PRECISION_CAPABILITY = (7, 0)

_OOM_PATTERNS = (
    re.compile(r"\bOOM\b"),
    re.compile(r"out of memory", re.IGNORECASE),
    re.compile(r"resource ?exhausted", re.IGNORECASE),
    re.compile(r"CUDA_ERROR_OUT_OF_MEMORY"),
)


@dataclass(frozen=True)
class GpuInfo:
    """What :func:`configure_gpu` found and decided.

    Attributes:
        gpus: one dict per visible GPU: ``name``, ``device_name``, ``compute_capability``.
        mixed_precision: whether the global Keras policy is now ``mixed_float16``.
        memory_growth: whether memory growth is on for every GPU.
        memory_limit_mb: the per-GPU cap when one was set (emulating a smaller card).
        reason: why mixed precision is on or off, plus any setting that could not be applied.
    """

    gpus: list[dict[str, Any]] = field(default_factory=list)
    mixed_precision: bool = False
    memory_growth: bool = False
    memory_limit_mb: int | None = None
    reason: str = ""

    @property
    def policy(self) -> str:
        """The Keras dtype policy name that was set."""
        return "mixed_float16" if self.mixed_precision else "float32"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields plus ``policy``."""
        return {**asdict(self), "policy": self.policy}


def _capability(details: dict[str, Any]) -> tuple[int, int] | None:
    cc = details.get("compute_capability")
    if not cc:
        return None
    return int(cc[0]), int(cc[1])


def configure_gpu(mixed_precision: str = "auto", *, memory_limit_mb: int | None = None) -> GpuInfo:
    """Set memory growth on every visible GPU and choose the Keras dtype policy.

    Call it first thing in a training process, before TensorFlow creates its context
    (afterwards TensorFlow refuses device settings; that is reported in ``reason``).

    Args:
        mixed_precision: ``"on"``, ``"off"`` or ``"auto"`` (on when every visible GPU has
            compute capability >= 7.0). The model's output layer should stay float32
            (``Dense(..., dtype="float32")``) for a numerically stable sigmoid.
        memory_limit_mb: cap TensorFlow's memory per GPU instead of memory growth (a logical
            device), to emulate a smaller card. TensorFlow allows one or the other.

    Returns:
        What was decided.

    Raises:
        ConfigError: an unknown ``mixed_precision`` mode or a non-positive limit.
    """
    if mixed_precision not in MIXED_PRECISION_MODES:
        raise ConfigError(
            f"`budget.mixed_precision` must be one of {list(MIXED_PRECISION_MODES)}, "
            f"but got {mixed_precision!r}"
        )
    if memory_limit_mb is not None and (isinstance(memory_limit_mb, bool) or memory_limit_mb <= 0):
        raise ConfigError(f"`memory_limit_mb` must be a positive integer, but got {memory_limit_mb!r}")
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    notes: list[str] = []
    growth = bool(gpus)
    for gpu in gpus:
        try:
            if memory_limit_mb is not None:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=int(memory_limit_mb))]
                )
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:
            # TensorFlow raises RuntimeError once its context exists; the settings are frozen.
            notes.append(f"{gpu.name}: device settings unchanged ({exc})")
            if memory_limit_mb is None:
                growth = growth and bool(tf.config.experimental.get_memory_growth(gpu))
    if memory_limit_mb is not None:
        growth = False

    described: list[dict[str, Any]] = []
    capabilities: list[tuple[int, int] | None] = []
    for gpu in gpus:
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except Exception:  # noqa: BLE001 - details are informative only
            details = {}
        cc = _capability(details)
        capabilities.append(cc)
        described.append(
            {
                "name": gpu.name,
                "device_name": details.get("device_name", ""),
                "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
            }
        )

    minimum = ".".join(map(str, MIN_MIXED_PRECISION_CAPABILITY))
    if mixed_precision == "off":
        use_mixed, why = False, "float32: budget.mixed_precision is off"
    elif mixed_precision == "on":
        use_mixed = True
        why = "mixed_float16: budget.mixed_precision is on"
        if not gpus:
            why += " (no GPU visible: float16 on the CPU is slow)"
    elif not gpus:
        use_mixed, why = False, "float32: no GPU visible"
    elif all(cc is not None and cc >= MIN_MIXED_PRECISION_CAPABILITY for cc in capabilities):
        use_mixed = True
        names = ", ".join(f"{d['device_name'] or d['name']} ({d['compute_capability']})" for d in described)
        why = f"mixed_float16: compute capability >= {minimum} on {names}"
    else:
        use_mixed = False
        names = ", ".join(
            f"{d['device_name'] or d['name']} ({d['compute_capability'] or 'unknown'})" for d in described
        )
        why = f"float32: mixed precision needs compute capability >= {minimum}, but got {names}"
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    reason = "; ".join([why, *notes])
    info = GpuInfo(
        gpus=described,
        mixed_precision=use_mixed,
        memory_growth=growth,
        memory_limit_mb=memory_limit_mb,
        reason=reason,
    )
    log.debug("configure_gpu: %s", info.to_dict())
    return info


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during (cycles cut)."""
    return list(exception_chain(exc))


def is_oom_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is an out-of-memory error.

    True for ``tf.errors.ResourceExhaustedError``, Python's ``MemoryError`` (host memory,
    which a smaller batch also relieves) and messages saying "OOM" or "out of memory".
    TensorFlow is only consulted when it is already imported.
    """
    tf = sys.modules.get("tensorflow")
    resource_exhausted = getattr(getattr(tf, "errors", None), "ResourceExhaustedError", None)
    for item in _chain(exc):
        if isinstance(item, MemoryError):
            return True
        if resource_exhausted is not None and isinstance(item, resource_exhausted):
            return True
        message = f"{type(item).__name__}: {item}"
        if any(p.search(message) for p in _OOM_PATTERNS):
            return True
    return False


def is_oom_exit(returncode: int | None, output: str = "") -> bool:
    """Whether a trial process that ended with ``returncode`` most likely died of memory.

    SIGKILL (the kernel's OOM killer; -9 from ``subprocess``, 137 from a shell) or an
    out-of-memory message in its last output.
    """
    if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL):
        return True
    return bool(output) and any(p.search(output) for p in _OOM_PATTERNS)
