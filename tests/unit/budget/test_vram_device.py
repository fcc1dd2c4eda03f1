"""Budget sources: config first, then NVML free memory, else no limit."""

from __future__ import annotations

import sys
import types

import pytest

from clot_hpo.budget import NvmlReading, VramBudget, detect_budget, read_nvml
from clot_hpo.config import BudgetConfig
from clot_hpo.errors import ConfigError

GiB = 1024**3


def _never(index: int) -> NvmlReading | None:
    raise AssertionError("NVML must not be read when the config gives vram_gb")


def test_config_vram_gb_wins_and_the_margin_applies() -> None:
    budget = detect_budget(BudgetConfig(vram_gb=4, safety_margin=0.25), nvml_reader=_never)
    assert budget.source == "config"
    assert budget.total_bytes == 4 * GiB
    assert budget.usable_bytes == 3 * GiB
    assert "budget.vram_gb" in budget.describe() and "25%" in budget.describe()


def test_nvml_free_memory_when_the_config_is_silent() -> None:
    seen: list[int] = []

    def reader(index: int) -> NvmlReading:
        seen.append(index)
        return NvmlReading(
            index=index, name="NVIDIA GeForce RTX 3050", free_bytes=3 * GiB, total_bytes=4 * GiB
        )

    budget = detect_budget(BudgetConfig(gpu_index=1), nvml_reader=reader)
    assert seen == [1]
    assert budget.source == "nvml" and budget.total_bytes == 3 * GiB
    assert budget.usable_bytes == int(3 * GiB * 0.9)
    assert "RTX 3050" in budget.describe()


def test_no_gpu_means_no_limit_and_says_so() -> None:
    budget = detect_budget(BudgetConfig(), nvml_reader=lambda index: None)
    assert budget.source == "none" and budget.usable_bytes is None and not budget.limited
    assert "no VRAM limit" in budget.describe()


def test_invalid_budgets_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="vram_gb"):
        VramBudget.from_gb(0)
    with pytest.raises(ConfigError, match="1.5"):
        VramBudget(total_bytes=GiB, margin=1.5)


class _NVMLError(Exception):
    pass


def _fake_pynvml(monkeypatch: pytest.MonkeyPatch, *, count: int = 2, fail_init: bool = False) -> list:
    """Install a stand-in ``pynvml`` that records which device it was asked for."""
    asked: list = []
    mod = types.ModuleType("pynvml")
    mod.NVMLError = _NVMLError

    def init() -> None:
        if fail_init:
            raise _NVMLError("Driver Not Loaded")

    mod.nvmlInit = init
    mod.nvmlShutdown = lambda: None
    mod.nvmlDeviceGetCount = lambda: count
    mod.nvmlDeviceGetHandleByIndex = lambda i: asked.append(i) or f"h{i}"
    mod.nvmlDeviceGetHandleByUUID = lambda u: asked.append(u) or f"h{u}"
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(free=GiB + len(asked), total=4 * GiB)
    mod.nvmlDeviceGetName = lambda h: b"Fake GPU"
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    return asked


def test_read_nvml_without_driver_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _fake_pynvml(monkeypatch, fail_init=True)
    assert read_nvml(0) is None


def test_read_nvml_maps_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _fake_pynvml(monkeypatch, count=4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    reading = read_nvml(1)
    assert asked == [1]
    assert reading is not None and reading.name == "Fake GPU" and reading.total_bytes == 4 * GiB
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert read_nvml(0) is None  # GPUs hidden on purpose


def test_read_nvml_rejects_a_missing_gpu_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _fake_pynvml(monkeypatch, count=2)
    with pytest.raises(ConfigError, match="gpu_index"):
        read_nvml(5)
