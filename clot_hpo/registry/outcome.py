"""What a promotion did: :class:`PromotionResult`, filled step by step by ``promote``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PromotionResult:
    """What :func:`~clot_hpo.registry.promotion.promote` did (``messages`` says it in words)."""

    model_name: str
    alias: str
    metric: str
    version: str
    run_id: str
    value: float
    direction: str = "maximize"  # of the metric, as the study recorded it
    study: str | None = None
    trial_number: int | None = None
    registered: bool = False  # a new version was created
    alias_moved: bool = False
    decision: str | None = None  # the gate's (gate.FIRST, PROMOTED, KEPT, BLOCKED, REFUSED)
    decided_now: bool = False  # False: the recorded decision stands (a rerun)
    previous_version: str | None = None
    previous_value: float | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """Every message, one per line."""
        return "\n".join(self.messages)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def beats(self, other: float) -> bool:
        """Whether this candidate's value is strictly better than ``other``."""
        return self.value > other if self.direction == "maximize" else self.value < other


__all__ = ["PromotionResult"]
