"""Schema of an experiment config (``experiments/*.yaml``).

Every section forbids unknown keys so a typo is an error, not a silent default.
This module must not import TensorFlow, Optuna or MLflow.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from clot_hpo.models.backbones import BACKBONES


def _known_backbone(name: str) -> str:
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, but got {name!r}")
    return name


# An MLflow server at one of these addresses keeps its artifacts on this machine.
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# `evaluation.threshold: sensitivity@0.95` (parsed by clot_hpo.evaluate.metrics.threshold_rule).
_SENSITIVITY_RULE = re.compile(r"sensitivity@(?P<target>\d*\.?\d+)")
_STUDY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def _safe_study_name(name: str | None) -> str | None:
    # The name becomes a folder (mlruns/studies/<name>), an MLflow experiment and a file name,
    # so `../../x` or `/etc` must not get that far.
    if name is not None and not _STUDY_NAME.fullmatch(name):
        raise ValueError(
            "a study name must be 1-128 characters of letters, digits, `.`, `_` and `-`, not starting "
            f"with `.` (it names a folder under mlruns/studies/), but got {name!r}"
        )
    return name


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(_Section):
    """How ``make demo`` generates the synthetic dataset when ``data.path`` is missing."""

    # The same names as clot_hpo.data.synthetic.DIFFICULTY_LEVELS (a test keeps them equal);
    # not imported from there, so loading a config does not import the generator.
    _LEVELS: ClassVar[dict[str, float]] = {"easy": 0.0, "medium": 0.5, "hard": 1.0}

    n_per_class: int = Field(
        200, ge=4, description="images per class at prevalence 0.5; the set has 2 x n_per_class images"
    )
    prevalence: float = Field(
        0.5, gt=0, lt=1, description="share of positive images (rare positives: 0.1); see docs/data.md"
    )
    image_size: int = Field(64, ge=16, le=1024, description="side of the generated images in pixels")
    difficulty: float = Field(
        0.0,
        description="0 (easy: a large, high-contrast clot) to 1 (hard: small and faint, more "
        "distractors); or `easy` (0), `medium` (0.5), `hard` (1). See docs/data.md",
    )

    @field_validator("difficulty", mode="before")
    @classmethod
    def _difficulty_by_name(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError(f"difficulty must be a number in [0, 1], but got {value}")
        if isinstance(value, str):
            name = value.strip().lower()
            if name in cls._LEVELS:
                return cls._LEVELS[name]
            try:
                return float(name)
            except ValueError:
                raise ValueError(
                    f"difficulty must be a number in [0, 1] or one of {', '.join(cls._LEVELS)}, "
                    f"but got {value!r}"
                ) from None
        return value

    @field_validator("difficulty")
    @classmethod
    def _difficulty_in_range(cls, value: float) -> float:
        if not 0 <= value <= 1:  # also refuses NaN
            raise ValueError(f"`0 <= difficulty <= 1` must hold, but got difficulty={value:g}")
        return value


class DicomConfig(_Section):
    """How DICOM pixels become an image (docs/data.md, "DICOM")."""

    window: tuple[float, float] | None = Field(
        None,
        description="[center, width] of the window used when a file carries none of its own, in "
        "the modality's units after rescale (CT: Hounsfield units; CT angiography: [300, 600]); "
        "none: the full range of the stored values",
    )
    frame: int | None = Field(
        None,
        ge=0,
        description="the frame (0-based) taken from a multi-frame file; none: multi-frame files are refused",
    )

    @field_validator("window")
    @classmethod
    def _positive_width(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[1] >= 1:  # also refuses NaN
            raise ValueError(f"`width >= 1` must hold for data.dicom.window, but got {list(value)}")
        return value


class DataConfig(_Section):
    """Where the images are and how to split them."""

    path: str = Field(
        "data/synthetic",
        description="data folder (class folders or metadata CSV); relative to the config file",
    )
    layout: Literal["auto", "folders", "metadata"] = Field(
        "auto", description="auto: metadata CSV when present, else class folders"
    )
    positive_dir: str = Field("positive", description="folder of clot images (folders layout)")
    negative_dir: str = Field("negative", description="folder of no-clot images (folders layout)")
    metadata_csv: str = Field("metadata.csv", description="metadata CSV, relative to the data folder")
    image_column: str = Field("image", description="CSV column: image path relative to the data folder")
    label_column: str = Field("label", description="CSV column: label")
    group_column: str | None = Field(
        "group", description="CSV column: patient/source id for grouped splits (ignored when absent)"
    )
    positive_label: str = Field("positive", description="label value of a clot")
    negative_label: str = Field("negative", description="label value of no clot")
    val_fraction: float = Field(
        0.15, gt=0, lt=1, description="share of images for validation (threshold, pruning)"
    )
    test_fraction: float = Field(0.15, gt=0, lt=1, description="share of images held out for test metrics")
    skip_corrupt: bool = Field(False, description="skip unreadable images (each listed) instead of refusing")
    fail_on_leakage: bool = Field(False, description="refuse to train when duplicates cross splits")
    near_duplicate_max_distance: int = Field(
        4, ge=0, le=64, description="perceptual-hash Hamming distance counted as a near duplicate"
    )
    cache: bool = Field(
        True,
        description="decode each image size once per study into an on-disk cache of uint8 arrays "
        "(float32 for a split with DICOM files) (mlruns/studies/<study>/cache); false: decode in every trial",
    )
    max_pixels: int = Field(
        50_000_000,
        ge=1,
        description="largest width x height of an image, read from its header before any decode "
        "(validation, training, predict, evaluate, the web page); refuses decompression bombs",
    )
    decode_memory_mb: int = Field(
        2048,
        ge=1,
        description="memory that images decoded at the same time may take together (estimated from "
        "their headers); bounds decode threads besides the cores",
    )
    allow_outside_root: bool = Field(
        False,
        description="accept images outside the data folder (absolute paths, `../`, links leaving "
        "it); off: such a row or file is refused",
    )
    dicom: DicomConfig = Field(
        default_factory=DicomConfig, description="windowing and frame choice of DICOM files"
    )
    # Generate the synthetic set into `path` when it does not exist (demo only).
    synthetic: SyntheticConfig | None = Field(
        None, description="generate a synthetic set at data.path when it is missing (demo)"
    )

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "`val_fraction + test_fraction < 0.9` must hold, but got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        return self


class ProgressiveResizeConfig(_Section):
    """Small images in the first epochs, growing to the trial's ``image_size`` (docs/pruning.md).

    A search space may search either number as a hyperparameter (``resize_start_fraction``,
    ``resize_full_size_epoch``); the values here are its defaults.
    """

    enabled: bool = Field(
        False, description="progressive resizing on (off: lost the champion on a hard task, docs/pruning.md)"
    )
    start_fraction: float = Field(
        0.5, gt=0, le=1, description="side of epoch 1's images as a fraction of the trial's image_size"
    )
    full_size_epoch: int = Field(
        3, ge=1, description="first epoch (1-based) at full size; the side grows linearly until then"
    )
    multiple: int = Field(
        8, ge=1, description="sides are rounded down to a multiple of this (fewer sizes: fewer traces)"
    )


class TrainingConfig(_Section):
    """Fixed training settings shared by every trial."""

    epochs: int = Field(3, ge=1, description="epochs per trial (the pruner's max resource)")
    steps_per_epoch: int | None = Field(
        None, ge=1, description="cap on steps per epoch (None: the whole training split)"
    )
    # Cap on training images per trial (None: all); keeps CPU demos short.
    max_train_images: int | None = Field(
        None, ge=2, description="cap on training images per trial (None: all)"
    )
    weights: str = Field(
        "imagenet", description="imagenet, none, or a local no-top weights file (relative to the config file)"
    )
    class_weight: Literal["none", "balanced"] = Field(
        "none",
        description="none, or balanced: each class's loss weighted by n / (2 n_class) of the training "
        "split (rare positives count as much as the negatives); a search space may search it like any "
        "hyperparameter (`class_weight: {type: categorical, choices: [none, balanced]}`); see docs/data.md",
    )
    jit_compile: bool | Literal["auto"] = Field(
        "auto",
        description="XLA-compile the train step: auto (Keras decides: on a GPU when every layer "
        "supports it, never on CPU), true or false. Compiling adds to every trial's first epoch; "
        "see docs/performance.md",
    )
    progressive_resize: ProgressiveResizeConfig = Field(
        default_factory=ProgressiveResizeConfig,
        description="grow each trial's image side over its first epochs (docs/pruning.md)",
    )


# The search's choices, named once: search/ builds each with a `match` that mypy checks is
# exhaustive, so a value added here without its implementation fails `make lint`.
SamplerName = Literal["tpe", "random", "cmaes"]
PrunerName = Literal["hyperband", "median", "none"]
ObjectiveName = Literal["val_auc", "val_accuracy", "val_loss", "sensitivity_at_specificity"]


class SearchConfig(_Section):
    """The Optuna study: what is searched, how, and within which budgets."""

    backbones: list[Annotated[str, AfterValidator(_known_backbone)]] = Field(
        default_factory=lambda: ["efficientnet_b1", "resnet50"],
        min_length=1,
        description="backbones searched (names from the backbone catalogue, clot_hpo/models/backbones.py); "
        "with several, the backbone is itself a searched choice",
    )
    search_spaces: dict[str, str] = Field(
        default_factory=dict,
        description="search space per backbone: a YAML file relative to the config file, or a bundled "
        "name such as `quickstart_resnet50` (default: the bundled `<backbone>.yaml`)",
    )
    study_name: Annotated[str | None, AfterValidator(_safe_study_name)] = Field(
        None,
        description="Optuna study and MLflow experiment name (default: name); letters, digits, `.`, "
        "`_`, `-`, at most 128, no leading `.`",
    )
    storage: str = Field(
        "sqlite:///mlruns/optuna.db",
        description="Optuna storage URL (sqlite:/// or postgresql+psycopg2://); a relative sqlite path "
        "is relative to the working directory",
    )
    sampler: SamplerName = Field("tpe", description="Optuna sampler (seeded)")
    pruner: PrunerName = Field("hyperband", description="pruner, reported once per epoch")
    fidelity: Literal["epochs", "resolution", "both"] = Field(
        "epochs",
        description="what the pruner's rungs spend: epochs at full size; resolution (the first "
        "epochs at fidelity_sizes, judged after each size, survivors go on at full size); or both "
        "(resolution rungs, then epoch rungs at full size). docs/pruning.md",
    )
    fidelity_sizes: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.5],
        min_length=1,
        description="sides of the resolution rungs as fractions of the trial's image_size, ascending",
    )
    objective: ObjectiveName = Field("val_auc", description="validation metric the study optimizes")
    target_specificity: float = Field(
        0.95, gt=0, lt=1, description="specificity for the sensitivity_at_specificity objective"
    )
    n_trials: int | None = Field(
        10, ge=1, description="finished (complete or pruned) trials the whole study should have"
    )
    timeout: float | None = Field(None, gt=0, description="seconds after which no new trial starts")
    max_total_epochs: int | None = Field(None, ge=1, description="epochs over all trials of the study")
    max_consecutive_failures: int = Field(3, ge=1, description="failed trials in a row that stop the study")
    heartbeat_interval: int = Field(10, ge=1, description="seconds between a running trial's heartbeats")
    grace_period: int | None = Field(
        None,
        ge=2,
        description="seconds without heartbeat before a trial counts as dead (default 3x interval)",
    )
    max_retry: int = Field(1, ge=0, description="times a dead trial's parameters are retried")
    resume: bool = Field(
        True,
        description="checkpoint every epoch in the trial's folder (and, tracked, on the tracking server) "
        "and resume a retried or preempted trial from its last epoch; false: retries start from "
        "scratch and no checkpoint is written. See docs/preemption.md",
    )
    max_resumes: int = Field(
        3, ge=0, description="times one trial may be resumed (any cause); one more fails it with the reason"
    )
    preemption_grace_s: float = Field(
        25.0,
        gt=0,
        description="seconds a worker given SIGTERM lets its trial finish the current epoch and "
        "checkpoint before it stops it; docker-compose.yml's stop_grace_period leaves room for it",
    )
    cv_folds: int | None = Field(
        None,
        description="k-fold cross-validation per trial: k folds of the non-test data, grouped by "
        "patient and stratified; the objective is the folds' mean, the promoted model a refit on "
        "all non-test data; costs about k + 1 trainings per trial (null: off; see docs/data.md)",
    )
    defaults_first: bool = Field(
        True,
        description="a new study's first trials build each search space's defaults (one per "
        "backbone), as KerasTuner's tuners do; ordinary trials in Optuna, MLflow and the budgets",
    )

    @field_validator("fidelity_sizes")
    @classmethod
    def _ascending_sizes(cls, sizes: list[float]) -> list[float]:
        if sorted(set(sizes)) != sizes:
            raise ValueError(f"`fidelity_sizes` must be strictly ascending, but got {sizes}")
        return sizes

    @field_validator("cv_folds")
    @classmethod
    def _at_least_two_folds(cls, value: int | None) -> int | None:
        if value is not None and value < 2:
            raise ValueError(f"`cv_folds >= 2` must hold when set (null turns folds off), but got {value}")
        return value

    @model_validator(mode="after")
    def _unique_backbones(self) -> SearchConfig:
        if len(set(self.backbones)) != len(self.backbones):
            raise ValueError(f"`backbones` must not repeat a name, but got {self.backbones}")
        return self


class EvaluationConfig(_Section):
    """How the decision threshold is chosen and intervals computed."""

    threshold: str = Field(
        "youden",
        description="how the decision threshold is chosen on validation: youden, target_sensitivity "
        "(at target_sensitivity), or sensitivity@S (the highest threshold whose sensitivity reaches S, "
        "e.g. sensitivity@0.95)",
    )
    target_sensitivity: float = Field(
        0.95, gt=0, lt=1, description="sensitivity the target_sensitivity threshold reaches"
    )
    confidence_level: float = Field(0.95, gt=0.5, lt=1, description="level of every interval")
    prevalence: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="deployment prevalence at which PPV and NPV are reported (null: each split's own); "
        "see docs/data.md",
    )
    max_interval_width: float = Field(
        0.2,
        gt=0,
        le=1,
        description="the report says when the test split has too few positives for a sensitivity "
        "interval this narrow",
    )
    bootstrap_samples: int = Field(1000, ge=100, description="bootstrap resamples for AUC intervals")
    log_sample_images: int = Field(
        0, ge=0, le=16, description="sample images logged to MLflow (0: no image leaves the machine)"
    )
    explanations: bool | Literal["auto"] = Field(
        "auto",
        description="log each completed trial's Grad-CAM failure gallery (explanations/: confident true "
        "positives, false positives, false negatives: images of the data); auto: only when the tracking "
        "store keeps artifacts on this machine (not to a remote MLflow server or object store); true: "
        "always; false: never",
    )

    @field_validator("threshold")
    @classmethod
    def _threshold_rule(cls, value: str) -> str:
        if value in ("youden", "target_sensitivity"):
            return value
        match = _SENSITIVITY_RULE.fullmatch(value.strip())
        if match is None or not 0 < float(match["target"]) <= 1:
            raise ValueError(
                "evaluation.threshold must be youden, target_sensitivity or sensitivity@S with 0 < S <= 1 "
                f"(e.g. sensitivity@0.95), but got {value!r}"
            )
        return f"sensitivity@{float(match['target']):g}"


class TrackingConfig(_Section):
    """Where MLflow runs go."""

    uri: str = Field(
        "sqlite:///mlruns/mlflow.db",
        description="MLflow tracking URI (database URI or http:// server); a relative sqlite path is "
        "relative to the working directory",
    )
    artifact_root: str = Field(
        "mlruns/artifacts",
        description="artifact folder for database URIs (relative to the working directory)",
    )
    experiment: str | None = Field(None, description="MLflow experiment (default: the study name)")
    log_model: bool = Field(True, description="log each completed trial's Keras model")
    log_manifest: Literal["keys", "full"] = Field(
        "keys",
        description="what MLflow gets of the split manifest: keys (content hashes, labels, splits) or "
        "full (file names and group ids too, which can carry patient identifiers; see docs/tracking.md)",
    )
    model_name: str = Field(
        "blood-clot-detector",
        description="registered model name; `promote`, `predict` and `evaluate` use it when given `--config`",
    )

    @property
    def keeps_artifacts_local(self) -> bool:
        """Whether logged artifacts stay on this machine.

        True for a database or file store with a local artifact folder, and for an MLflow
        server on a loopback address.
        """
        if self.uri.partition("://")[0] in ("http", "https"):
            host = urlsplit(self.uri).hostname or ""
            return host in _LOOPBACK_HOSTS
        root_scheme = self.artifact_root.partition("://")[0] if "://" in self.artifact_root else "file"
        return root_scheme == "file"


class ServeConfig(_Section):
    """What the diagnostic page (`clot-hpo serve`) accepts and how much work it takes on at once."""

    max_upload_mb: float = Field(10.0, gt=0, description="largest image file accepted (413 above)")
    max_files: int = Field(16, ge=1, le=256, description="most images per request")
    max_request_mb: float = Field(
        32.0, gt=0, description="largest request body, all its files together (413 above)"
    )
    max_concurrent_uploads: int = Field(
        4, ge=1, description="request bodies received at once; one more is answered 503 with Retry-After"
    )
    max_buffered_mb: float = Field(
        128.0,
        gt=0,
        description="bytes of request bodies all requests in flight may hold together (503 with "
        "Retry-After above)",
    )
    trusted_hosts: list[str] = Field(
        default_factory=list,
        description="names the page answers to besides the loopback names and --host (the Host header; "
        "any other is 400, against DNS rebinding)",
    )


class BudgetConfig(_Section):
    """VRAM budget of the card trials run on."""

    vram_gb: float | None = Field(
        None, gt=0, description="card memory in GiB (else NVML free memory, else no limit)"
    )
    safety_margin: float = Field(0.1, ge=0, lt=1, description="share of the card kept free")
    mixed_precision: Literal["auto", "on", "off"] = Field(
        "auto", description="mixed_float16: auto uses it on cards that support it"
    )
    min_batch_size: int = Field(2, ge=1, description="smallest batch the budget may shrink to")
    gpu_index: int = Field(0, ge=0, description="GPU whose memory NVML reads")


class ExperimentConfig(_Section):
    """A whole experiment: one YAML file, overridable from the command line."""

    name: Annotated[str, AfterValidator(_safe_study_name)] = Field(
        "experiment", description="experiment name; default study name (same rules as search.study_name)"
    )
    seed: int = Field(42, description="seeds splits, samplers and training")
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @model_validator(mode="after")
    def _folds_train_at_full_size(self) -> ExperimentConfig:
        # A cross-validated trial reports at the end of each fold, every epoch at full size:
        # rungs at reduced sizes and a size schedule have nothing to judge or follow there.
        resizing = self.training.progressive_resize.enabled
        if self.search.cv_folds and (self.search.fidelity != "epochs" or resizing):
            raise ValueError(
                "search.cv_folds trains every fold at full size, so search.fidelity must be epochs and "
                "training.progressive_resize.enabled false, but got fidelity="
                f"{self.search.fidelity}, progressive_resize.enabled={resizing}"
            )
        return self

    @property
    def logs_explanations(self) -> bool:
        """Whether trials log their failure gallery, images of the data.

        ``evaluation.explanations``; ``auto``: only when :attr:`TrackingConfig.keeps_artifacts_local`.
        Images leave the machine only when the config says so.
        """
        choice = self.evaluation.explanations
        return self.tracking.keeps_artifacts_local if choice == "auto" else bool(choice)

    @property
    def study_name(self) -> str:
        """The Optuna study name: ``search.study_name`` or the experiment name."""
        return self.search.study_name or self.name
