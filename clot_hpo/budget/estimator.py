"""Estimate a training configuration's GPU memory before a single step runs.

The estimate is the sum of five terms (see ``docs/vram.md``):

* **weights**: every parameter of the built model (backbone + classifier head) in float32;
  under mixed precision Keras keeps float32 master weights and casts them to float16 for
  each step, and those float16 copies are counted separately (``weight_copies_bytes``);
* **gradients**: one float32 value per *trainable* parameter;
* **optimizer**: the optimizer's slots per trainable parameter (Adam/AdamW: 2, SGD with
  momentum: 1), plus one gradient accumulator per trainable parameter when Keras'
  ``gradient_accumulation_steps`` is used;
* **activations**: what the forward pass keeps for the backward pass, from the built model's
  per-layer output shapes times the batch size and the element size (2 bytes under mixed
  precision, 4 otherwise). Only layers that are trained through count: with a frozen
  backbone (``trainable="head"``) its activations are freed as the forward pass goes, so
  only the transient peak (twice the largest layer call's input+output), the feature map
  and the head count;
* **workspace**: the CUDA/cuDNN runtime, convolution scratch space, the backward pass's
  transient gradients and allocator fragmentation (named constants below).

Building a backbone takes seconds (EfficientNetB1: about 2.5 s on one CPU core), so the
per-sample layer profile is cached per ``(backbone, image_size)`` in the process; a trial
passes the profile of the backbone it built (:func:`profile_model`) and builds none here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from clot_hpo.errors import ConfigError
from clot_hpo.models.optimizers import OPTIMIZERS
from clot_hpo.util import first_line

GiB = 1024**3
MiB = 1024**2

TRAINABLE_MODES = ("all", "head")
# Slots the optimizer keeps per trainable parameter, from the optimizer catalogue.
OPTIMIZER_SLOTS: dict[str, int] = {name: spec.slots for name, spec in OPTIMIZERS.items()}

FLOAT32_BYTES = 4
FLOAT16_BYTES = 2

# --- workspace constants (calibrated; see docs/vram.md) ------------------------------------
# Memory the process needs on the card outside TensorFlow's tensor allocator: the CUDA
# context, cuBLAS/cuDNN handles and the kernels they load. 250-500 MiB with CUDA 12 and
# lazy module loading; NVML's "free" memory is read before the trial's process creates it.
RUNTIME_OVERHEAD_BYTES = 384 * MiB
# cuDNN convolution scratch space. TensorFlow's autotuner only picks algorithms whose
# workspace it can allocate, and the fast ones (FFT, Winograd) want about one activation
# tensor; the floor covers small models whose fastest kernels still ask for tens of MiB.
CONV_WORKSPACE_MIN_BYTES = 64 * MiB
# While backpropagating through the widest layer, the gradient flowing in and the gradient
# flowing out coexist with the kept activations: two tensors of the largest layer output.
BACKWARD_TRANSIENT_TENSORS = 2
# TensorFlow's BFC allocator rounds and splits chunks; a trained model's peak is 5-15 %
# above the sum of live tensors. Applied to every other term except the runtime overhead.
FRAGMENTATION_FRACTION = 0.10
# A frozen backbone's forward pass frees each activation once consumed, but residual and
# squeeze-excitation branches keep a block's input alive while its body runs: the live set
# reaches about twice the largest single layer call's input+output.
FROZEN_FORWARD_LIVENESS = 2
# The classifier head assumed when the caller does not say: the widest optional dense layer.
DEFAULT_HEAD_UNITS = 256


@dataclass(frozen=True)
class BackboneProfile:
    """Per-sample memory facts of one backbone at one image size (batch dimension excluded).

    Attributes:
        backbone: registry name.
        image_size: side of the square input.
        total_params: every parameter (trainable or not, e.g. BatchNorm moving statistics).
        trainable_params: parameters trained when the backbone is trained.
        input_elements: elements of one input image (S*S*3).
        activation_elements: sum over the backbone's layer calls of their output elements.
        largest_output_elements: the largest single layer output.
        largest_step_elements: the largest input+output of one layer call (the frozen
            forward pass's transient peak).
        feature_shape: the feature map's shape (h, w, c).
        layer_calls: how many layer calls were counted.
    """

    backbone: str
    image_size: int
    total_params: int
    trainable_params: int
    input_elements: int
    activation_elements: int
    largest_output_elements: int
    largest_step_elements: int
    feature_shape: tuple[int, ...]
    layer_calls: int

    @property
    def feature_elements(self) -> int:
        """Elements of one sample's feature map."""
        return math.prod(self.feature_shape)


@dataclass(frozen=True)
class VramEstimate:
    """One configuration's estimated GPU memory, by term (bytes).

    ``total_bytes`` is the sum of every ``*_bytes`` field. ``weights_bytes`` is always
    ``total_params * 4`` (float32 master weights); the float16 copies that mixed precision
    casts for each step are ``weight_copies_bytes``.
    """

    backbone: str
    image_size: int
    batch_size: int
    mixed_precision: bool
    trainable: str
    optimizer: str
    accumulation_steps: int
    head_units: int
    total_params: int
    trainable_params: int
    weights_bytes: int
    weight_copies_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    workspace_bytes: int

    @property
    def total_bytes(self) -> int:
        """The whole estimate in bytes."""
        return (
            self.weights_bytes
            + self.weight_copies_bytes
            + self.gradients_bytes
            + self.optimizer_bytes
            + self.activations_bytes
            + self.workspace_bytes
        )

    @property
    def total_gib(self) -> float:
        """The whole estimate in GiB."""
        return self.total_bytes / GiB

    def fits(self, budget_bytes: int | None) -> bool:
        """Whether the estimate fits ``budget_bytes`` (``None``: no limit, always fits)."""
        return budget_bytes is None or self.total_bytes <= budget_bytes

    def breakdown(self) -> dict[str, int]:
        """The terms in bytes, in display order."""
        return {
            "weights_bytes": self.weights_bytes,
            "weight_copies_bytes": self.weight_copies_bytes,
            "gradients_bytes": self.gradients_bytes,
            "optimizer_bytes": self.optimizer_bytes,
            "activations_bytes": self.activations_bytes,
            "workspace_bytes": self.workspace_bytes,
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field plus ``total_bytes``: JSON-able."""
        out = asdict(self)
        out["total_bytes"] = self.total_bytes
        return out

    def summary(self) -> str:
        """A few readable lines: configuration, the terms and the total."""
        precision = "mixed float16" if self.mixed_precision else "float32"
        accumulation = f" x {self.accumulation_steps} accumulation" if self.accumulation_steps > 1 else ""
        lines = [
            f"{self.backbone} {self.image_size}px, batch {self.batch_size}{accumulation}, {precision}, "
            f"trainable={self.trainable}, optimizer={self.optimizer}",
            f"  parameters: {self.total_params:,} ({self.trainable_params:,} trainable)",
        ]
        for name, value in self.breakdown().items():
            lines.append(f"  {name.removesuffix('_bytes'):<15} {format_bytes(value):>11}")
        lines.append(f"  {'total':<15} {format_bytes(self.total_bytes):>11}")
        return "\n".join(lines)


def format_bytes(n: int | float | None) -> str:
    """``1536 * MiB`` -> ``"1.50 GiB"``; ``None`` -> ``"no limit"``."""
    if n is None:
        return "no limit"
    if abs(n) >= GiB:
        return f"{n / GiB:.2f} GiB"
    return f"{n / MiB:.1f} MiB"


# ----- validation ----------------------------------------------------------------------------
def known_backbones() -> list[str]:
    """Backbone names the estimator accepts (the model registry's)."""
    from clot_hpo.models import list_backbones

    return list_backbones()


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"`{name}` must be a positive integer, but got {value!r}")
    return value


def validate_config(backbone: str, image_size: int, batch_size: int, trainable: str, optimizer: str) -> None:
    """Raise :class:`ConfigError` naming the rule when a configuration is malformed."""
    names = known_backbones()
    if backbone not in names:
        raise ConfigError(f"`backbone` must be one of {names}, but got {backbone!r}")
    _check_positive_int("image_size", image_size)
    _check_positive_int("batch_size", batch_size)
    if trainable not in TRAINABLE_MODES:
        raise ConfigError(f"`trainable` must be one of {list(TRAINABLE_MODES)}, but got {trainable!r}")
    if optimizer not in OPTIMIZER_SLOTS:
        raise ConfigError(f"`optimizer` must be one of {sorted(OPTIMIZER_SLOTS)}, but got {optimizer!r}")


# ----- profiling a built backbone --------------------------------------------------------------
def _elements(tensor: Any) -> int:
    """Elements of one sample of a symbolic tensor (the batch dimension dropped)."""
    dims = tuple(tensor.shape)[1:]
    if any(d is None for d in dims):
        raise ConfigError(f"cannot size a layer output with an unknown dimension: shape {tensor.shape}")
    return math.prod(int(d) for d in dims)


def _layer_calls(model: Any) -> list[tuple[int, int]]:
    """``(input_elements, output_elements)`` of every layer call in ``model``, nested models opened.

    Walks the functional graph's own nodes (``_nodes_by_depth``, as Keras' serializer does), so
    a layer shared or called outside this model is counted exactly for this model's calls.
    """
    import keras

    graph = model._functional if isinstance(model, keras.Sequential) else model
    nodes_by_depth = getattr(graph, "_nodes_by_depth", None)
    if nodes_by_depth is None:
        # A subclassed model exposes no graph: count it as one opaque call.
        return [(sum(_elements(t) for t in model.inputs), sum(_elements(t) for t in model.outputs))]
    calls: list[tuple[int, int]] = []
    for depth in sorted(nodes_by_depth, reverse=True):  # from the inputs to the outputs
        for node in nodes_by_depth[depth]:
            if node.is_input:
                continue
            if isinstance(node.operation, keras.Model):
                calls.extend(_layer_calls(node.operation))
                continue
            inputs = sum(_elements(t) for t in node.input_tensors)
            outputs = sum(_elements(t) for t in node.outputs)
            calls.append((inputs, outputs))
    return calls


def _build_backbone(backbone: str, image_size: int) -> Any:
    """Build the registry's backbone with random weights, on the CPU.

    ``keras.device`` keeps the variables off the GPU on any Keras backend (TensorFlow's
    ``/CPU:0``, JAX's ``cpu:0``): in a trial process the estimate runs before training and
    must not take memory from it. TensorFlow is not needed (e.g. ``KERAS_BACKEND=jax``).
    """
    import keras

    from clot_hpo.models import create_backbone

    cpu = "/CPU:0" if keras.backend.backend() == "tensorflow" else "cpu:0"
    try:
        with keras.device(cpu):
            return create_backbone(backbone, image_size=image_size, weights=None)
    except ValueError as exc:
        # keras.applications refuses inputs below 32x32 with a ValueError.
        first = first_line(exc)
        raise ConfigError(
            f"`image_size` {image_size} is not valid for backbone {backbone!r}: {first}"
        ) from exc


def _trainable_when_trained(model: Any) -> int:
    """Parameters training the whole ``model`` updates, whatever its ``trainable`` flags are now.

    A trial's model may be frozen for its first epochs; the estimate plans for the whole base.
    The flags are switched on to count and then put back as they were (outer layers first:
    setting a layer's flag may set its sublayers' too). Each layer is switched by itself:
    Keras skips the sublayers when a model's own flag does not change.
    """
    import numpy as np

    def walk(layer: Any) -> list[Any]:
        return [layer, *(inner for sub in getattr(layer, "layers", []) for inner in walk(sub))]

    layers = walk(model)
    flags = [layer.trainable for layer in layers]
    try:
        for layer in layers:
            layer.trainable = True
        return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    finally:
        for layer, flag in zip(layers, flags, strict=True):
            layer.trainable = flag


def profile_model(model: Any, *, backbone: str, image_size: int) -> BackboneProfile:
    """Measure an already built backbone (a trial's own: it need not be built again to plan).

    Args:
        model: the backbone, e.g. ``trial_model.get_layer("backbone")``.
        backbone: its registry name.
        image_size: the side of its square input.
    """
    import numpy as np

    calls = _layer_calls(model)
    output = model.outputs[0]
    return BackboneProfile(
        backbone=backbone,
        image_size=image_size,
        total_params=int(sum(int(np.prod(w.shape)) for w in model.weights)),
        trainable_params=_trainable_when_trained(model),
        input_elements=image_size * image_size * 3,
        activation_elements=sum(out for _, out in calls),
        largest_output_elements=max((out for _, out in calls), default=0),
        largest_step_elements=max((i + o for i, o in calls), default=0),
        feature_shape=tuple(int(d) for d in tuple(output.shape)[1:]),
        layer_calls=len(calls),
    )


@functools.lru_cache(maxsize=64)
def backbone_profile(backbone: str, image_size: int) -> BackboneProfile:
    """Build ``backbone`` at ``image_size`` once per process and measure its layers."""
    import gc

    model = _build_backbone(backbone, image_size)
    try:
        return profile_model(model, backbone=backbone, image_size=image_size)
    finally:
        del model
        gc.collect()


def head_profile(feature_shape: tuple[int, ...], head_units: int) -> tuple[int, int]:
    """``(params, activation elements per sample)`` of pooling -> dropout -> [dense] -> sigmoid.

    Dense layers keep both the pre-activation and the activation output.
    """
    channels = int(feature_shape[-1])
    if head_units > 0:
        params = channels * head_units + head_units + head_units + 1
        activations = channels + channels + 2 * head_units + head_units + 2
    else:
        params = channels + 1
        activations = channels + channels + 2
    return params, activations


# ----- the estimate ----------------------------------------------------------------------------
def estimate_vram(
    backbone: str,
    image_size: int,
    batch_size: int,
    *,
    mixed_precision: bool = False,
    trainable: Literal["all", "head"] | str = "all",
    optimizer: str = "adam",
    accumulation_steps: int = 1,
    head_units: int = DEFAULT_HEAD_UNITS,
    profile: BackboneProfile | None = None,
) -> VramEstimate:
    """Estimate the GPU memory of training one configuration.

    Args:
        backbone: a registry name (``clot_hpo.models.list_backbones()``).
        image_size: side of the square input in pixels.
        batch_size: images per step.
        mixed_precision: ``mixed_float16`` (float16 activations, float32 master weights).
        trainable: ``"all"`` (backbone and head trained) or ``"head"`` (backbone frozen).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (with momentum).
        accumulation_steps: Keras ``gradient_accumulation_steps``; above 1 the optimizer keeps
            one accumulator per trainable parameter.
        head_units: units of the head's optional dense layer (0: none). Defaults to the
            widest the search spaces allow, so the estimate is an upper bound.
        profile: the backbone's profile when the caller has built it (:func:`profile_model`);
            by default the backbone is built here (once per process and size).

    Returns:
        The estimate, by term.

    Raises:
        ConfigError: an unknown name or a non-positive size.
    """
    validate_config(backbone, image_size, batch_size, trainable, optimizer)
    _check_positive_int("accumulation_steps", accumulation_steps)
    if isinstance(head_units, bool) or not isinstance(head_units, int) or head_units < 0:
        raise ConfigError(f"`head_units` must be an integer >= 0, but got {head_units!r}")

    if profile is None:
        profile = backbone_profile(backbone, image_size)
    elif (profile.backbone, profile.image_size) != (backbone, image_size):
        raise ConfigError(
            f"`profile` must be of {backbone} at {image_size} px, but got "
            f"{profile.backbone} at {profile.image_size} px"
        )
    head_params, head_activations = head_profile(profile.feature_shape, head_units)
    element = FLOAT16_BYTES if mixed_precision else FLOAT32_BYTES

    total_params = profile.total_params + head_params
    trainable_params = head_params + (profile.trainable_params if trainable == "all" else 0)

    weights = total_params * FLOAT32_BYTES
    weight_copies = total_params * FLOAT16_BYTES if mixed_precision else 0
    gradients = trainable_params * FLOAT32_BYTES
    accumulators = trainable_params * FLOAT32_BYTES if accumulation_steps > 1 else 0
    optimizer_state = trainable_params * FLOAT32_BYTES * OPTIMIZER_SLOTS[optimizer] + accumulators

    # The input batch arrives as float32 pixels whatever the policy.
    input_bytes = batch_size * profile.input_elements * FLOAT32_BYTES
    largest_output = batch_size * profile.largest_output_elements * element
    if trainable == "all":
        kept = profile.activation_elements + head_activations
        activations = input_bytes + batch_size * kept * element
        backward_transient = BACKWARD_TRANSIENT_TENSORS * largest_output
    else:
        # Frozen backbone: nothing of it is kept for backward, but the forward pass still
        # holds one layer's input and output at a time, then the feature map feeds the head.
        kept = (
            FROZEN_FORWARD_LIVENESS * profile.largest_step_elements
            + profile.feature_elements
            + head_activations
        )
        activations = input_bytes + batch_size * kept * element
        backward_transient = 0
    conv_workspace = max(CONV_WORKSPACE_MIN_BYTES, largest_output)
    tensors = weights + weight_copies + gradients + optimizer_state + activations
    fragmentation = int(FRAGMENTATION_FRACTION * (tensors + backward_transient))
    workspace = RUNTIME_OVERHEAD_BYTES + conv_workspace + backward_transient + fragmentation

    return VramEstimate(
        backbone=backbone,
        image_size=image_size,
        batch_size=batch_size,
        mixed_precision=bool(mixed_precision),
        trainable=trainable,
        optimizer=optimizer,
        accumulation_steps=accumulation_steps,
        head_units=head_units,
        total_params=total_params,
        trainable_params=trainable_params,
        weights_bytes=weights,
        weight_copies_bytes=weight_copies,
        gradients_bytes=gradients,
        optimizer_bytes=optimizer_state,
        activations_bytes=activations,
        workspace_bytes=workspace,
    )
