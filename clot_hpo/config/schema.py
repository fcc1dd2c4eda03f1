"""Schema of an experiment config (``experiments/*.yaml``).

Every section forbids unknown keys so a typo is an error, not a silent default.
This module must not import TensorFlow, Optuna or MLflow.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BACKBONES = ("efficientnet_b1", "resnet50", "tiny_cnn")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(_Section):
    """How ``make demo`` generates the synthetic dataset when ``data.path`` is missing."""

    n_per_class: int = Field(200, ge=4)
    image_size: int = Field(64, ge=16, le=1024)


class DataConfig(_Section):
    """Where the images are and how to split them."""

    path: str = "data/synthetic"
    layout: Literal["auto", "folders", "metadata"] = "auto"
    positive_dir: str = "positive"
    negative_dir: str = "negative"
    metadata_csv: str = "metadata.csv"
    image_column: str = "image"
    label_column: str = "label"
    group_column: str | None = "group"
    positive_label: str = "positive"
    negative_label: str = "negative"
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.15, gt=0, lt=1)
    skip_corrupt: bool = False
    fail_on_leakage: bool = False
    near_duplicate_max_distance: int = Field(4, ge=0, le=64)
    cache: bool = True
    # Generate the synthetic set into `path` when it does not exist (demo only).
    synthetic: SyntheticConfig | None = None

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "`val_fraction + test_fraction < 0.9` must hold, but got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        return self


class TrainingConfig(_Section):
    """Fixed training settings shared by every trial."""

    epochs: int = Field(3, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)
    # Cap on training images per trial (None: all); keeps CPU demos short.
    max_train_images: int | None = Field(None, ge=2)
    weights: str = "imagenet"  # "imagenet", "none", or a path to a local weights file
    verbose: bool = True


class SearchConfig(_Section):
    """The Optuna study: what is searched, how, and within which budgets."""

    backbones: list[Literal["efficientnet_b1", "resnet50", "tiny_cnn"]] = Field(
        default_factory=lambda: ["efficientnet_b1", "resnet50"], min_length=1
    )
    search_spaces: dict[str, str] = Field(default_factory=dict)
    study_name: str | None = None
    storage: str = "sqlite:///mlruns/optuna.db"
    sampler: Literal["tpe", "random", "cmaes"] = "tpe"
    pruner: Literal["hyperband", "median", "none"] = "hyperband"
    objective: Literal["val_auc", "val_accuracy", "val_loss", "sensitivity_at_specificity"] = "val_auc"
    target_specificity: float = Field(0.95, gt=0, lt=1)
    n_trials: int | None = Field(10, ge=1)
    timeout: float | None = Field(None, gt=0)
    max_total_epochs: int | None = Field(None, ge=1)
    max_consecutive_failures: int = Field(3, ge=1)
    heartbeat_interval: int = Field(10, ge=1)
    grace_period: int | None = Field(None, ge=2)
    max_retry: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _unique_backbones(self) -> SearchConfig:
        if len(set(self.backbones)) != len(self.backbones):
            raise ValueError(f"`backbones` must not repeat a name, but got {self.backbones}")
        return self


class EvaluationConfig(_Section):
    """How the decision threshold is chosen and intervals computed."""

    threshold: Literal["youden", "target_sensitivity"] = "youden"
    target_sensitivity: float = Field(0.95, gt=0, lt=1)
    confidence_level: float = Field(0.95, gt=0.5, lt=1)
    bootstrap_samples: int = Field(1000, ge=100)
    log_sample_images: int = Field(0, ge=0, le=16)


class TrackingConfig(_Section):
    """Where MLflow runs go."""

    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"
    experiment: str | None = None  # default: the study name
    log_model: bool = True
    model_name: str = "blood-clot-detector"


class BudgetConfig(_Section):
    """VRAM budget of the card trials run on."""

    vram_gb: float | None = Field(None, gt=0)
    safety_margin: float = Field(0.1, ge=0, lt=1)
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    min_batch_size: int = Field(2, ge=1)
    gpu_index: int = Field(0, ge=0)


class ExperimentConfig(_Section):
    """A whole experiment: one YAML file, overridable from the command line."""

    name: str = "experiment"
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)

    @property
    def study_name(self) -> str:
        """The Optuna study name: ``search.study_name`` or the experiment name."""
        return self.search.study_name or self.name
