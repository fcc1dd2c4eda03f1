"""Typed search-space specs and their registration on a KerasTuner-style ``hp``.

This module knows nothing of Keras, TensorFlow or Optuna: ``SearchSpace.sample`` only calls
``hp.Float/Int/Choice/Boolean/Fixed`` and ``hp.conditional_scope`` (duck typing), so it works
with ``keras_tuner.HyperParameters`` and with ``clot_hpo.search.hp.OptunaHyperParameters``.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ParamType = Literal["float", "int", "categorical", "bool", "fixed"]
PARAM_TYPES: tuple[str, ...] = ("float", "int", "categorical", "bool", "fixed")

# A condition on this name is decided by the file's own ``backbone`` (see SearchSpace.sample).
BACKBONE = "backbone"
# Parameter, backbone and search-space names: identifiers, so they are safe as file stems too.
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Inclusive bounds of every value a parameter with one of these names can take: an image size
# of 0 or 100000, or a batch of -1, fails deep inside Keras (or exhausts memory) instead of at load.
# Up to 4096 px stays searchable: the VRAM budget prunes what the card cannot hold.
SIZE_BOUNDS: dict[str, tuple[int, int]] = {"image_size": (16, 4096), "batch_size": (1, 1024)}


@dataclass(frozen=True)
class Condition:
    """Active only when the parameter ``parent`` currently takes one of ``values``."""

    parent: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class ParamSpec:
    """One searched (or fixed) hyperparameter.

    Attributes:
        name: the parameter name (without any prefix).
        type: ``float``, ``int``, ``categorical``, ``bool`` or ``fixed``.
        low, high: inclusive range of ``float``/``int``.
        step: grid step of ``float``/``int`` (never together with ``log``).
        log: sample ``float``/``int`` on a log scale.
        choices: the values of ``categorical``.
        value: the value of ``fixed``.
        default: KerasTuner's default (kept for KerasTuner; Optuna does not use it).
        when: the condition that makes this parameter active, if any.
    """

    name: str
    type: ParamType
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    value: Any = None
    default: Any = None
    when: Condition | None = None

    def register(self, hp: Any, name: str) -> Any:
        """Declare this parameter on ``hp`` under ``name``; returns its value (None if inactive)."""
        if self.type in ("float", "int"):
            declare = hp.Float if self.type == "float" else hp.Int
            return declare(
                name,
                self.low,
                self.high,
                step=self.step,
                sampling="log" if self.log else "linear",
                default=self.default,
            )
        if self.type == "categorical":
            assert self.choices is not None
            return hp.Choice(name, list(self.choices), default=self.default)
        if self.type == "bool":
            return hp.Boolean(name, default=bool(self.default) if self.default is not None else False)
        return hp.Fixed(name, self.value)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form of this parameter (only the keys that are set)."""
        out: dict[str, Any] = {"type": self.type}
        if self.type in ("float", "int"):
            out["low"], out["high"] = self.low, self.high
            if self.step is not None:
                out["step"] = self.step
            if self.log:
                out["log"] = True
        elif self.type == "categorical":
            out["choices"] = list(self.choices or ())
        elif self.type == "fixed":
            out["value"] = self.value
        if self.default is not None:
            out["default"] = self.default
        if self.when is not None:
            out["when"] = {self.when.parent: list(self.when.values)}
        return out


@dataclass(frozen=True)
class SearchSpace:
    """A backbone's search space, as loaded from ``search_spaces/<name>.yaml``.

    Attributes:
        backbone: the backbone these parameters are for.
        parameters: specs in file order (a parent always comes before its children).
        source: the file it was loaded from (``None`` when built from a dict).
        description: free text from the file.
    """

    backbone: str
    parameters: dict[str, ParamSpec]
    source: Path | None = None
    description: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (loadable again with ``parse_search_space``)."""
        out: dict[str, Any] = {"backbone": self.backbone}
        if self.description is not None:
            out["description"] = self.description
        out["parameters"] = {name: spec.to_dict() for name, spec in self.parameters.items()}
        return out

    def sample(self, hp: Any, *, prefix: str = "") -> dict[str, Any]:
        """Register every parameter on ``hp`` and return the active values.

        Each parameter is declared as ``prefix + name`` inside the conditional scopes of its
        ancestors (``hp.conditional_scope(prefix + parent, values)``), so KerasTuner's rules
        apply: a parameter whose condition does not hold returns ``None`` and is left out.
        A condition on ``backbone`` is decided here against ``self.backbone``; choosing
        *between* backbones is the caller's job (wrap this call in
        ``hp.conditional_scope("backbone", [space.backbone])``).

        Args:
            hp: a KerasTuner-style ``HyperParameters`` object.
            prefix: prepended to every registered name (e.g. ``"resnet50/"``).

        Returns:
            ``{name: value}`` (names without prefix) of the active parameters.
        """
        values: dict[str, Any] = {}
        for name, spec in self.parameters.items():
            chain = self.condition_chain(name)
            if any(c.parent == BACKBONE and self.backbone not in c.values for c in chain):
                continue  # statically inactive for this backbone: not declared at all
            scopes = [c for c in chain if c.parent != BACKBONE]
            with contextlib.ExitStack() as stack:
                for cond in scopes:
                    stack.enter_context(hp.conditional_scope(prefix + cond.parent, list(cond.values)))
                value = spec.register(hp, prefix + name)
            # Choices may not be null (checked on load), so None always means inactive.
            if value is not None:
                values[name] = value
        return values

    def condition_chain(self, name: str) -> list[Condition]:
        """The conditions from the outermost ancestor down to ``name``'s own."""
        chain: list[Condition] = []
        spec = self.parameters[name]
        while spec.when is not None:
            chain.append(spec.when)
            if spec.when.parent not in self.parameters:  # backbone
                break
            spec = self.parameters[spec.when.parent]
        return chain[::-1]
