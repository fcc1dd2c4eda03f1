"""VRAM-aware trial budget: estimate, device budget, per-trial policy and GPU habits.

Nothing here trains or logs; TensorFlow is imported only by the functions that need it.
"""

from __future__ import annotations

from clot_hpo.budget.device import NvmlReading, VramBudget, detect_budget, read_nvml
from clot_hpo.budget.estimator import (
    BackboneProfile,
    VramEstimate,
    backbone_profile,
    estimate_vram,
    format_bytes,
    profile_model,
)
from clot_hpo.budget.gpu import GpuInfo, configure_gpu, is_oom_error, is_oom_exit
from clot_hpo.budget.policy import (
    BudgetDecision,
    constraint_value,
    halve_for_oom,
    largest_fitting_batch,
    plan_trial,
)
from clot_hpo.budget.trial import TrialBudget, plan_budget, plan_trial_budget, planned_trainable

__all__ = [
    "BackboneProfile",
    "BudgetDecision",
    "GpuInfo",
    "NvmlReading",
    "TrialBudget",
    "VramBudget",
    "VramEstimate",
    "backbone_profile",
    "configure_gpu",
    "constraint_value",
    "detect_budget",
    "estimate_vram",
    "format_bytes",
    "halve_for_oom",
    "is_oom_error",
    "is_oom_exit",
    "largest_fitting_batch",
    "plan_budget",
    "plan_trial",
    "plan_trial_budget",
    "planned_trainable",
    "profile_model",
    "read_nvml",
]
