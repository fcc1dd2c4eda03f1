"""The names the tracker writes and the registry reads: run tags, roles, headline metrics.

This is the contract between :mod:`clot_hpo.tracking` (which writes a study's runs) and
:mod:`clot_hpo.registry` (which finds runs and models by these names); changing a value
here orphans the runs already written, so values are never changed, only added.
"""

from __future__ import annotations

# ----- run tags -----------------------------------------------------------------------------
TAG_ROLE = "clot_hpo.role"  # ROLE_STUDY on the parent run, ROLE_TRIAL on children
TAG_STUDY = "clot_hpo.study"
TAG_DIGEST = "clot_hpo.dataset_digest"  # the full digest (MLflow's dataset digest keeps 36 characters)
TAG_MODEL_ID = "clot_hpo.model_id"  # the trial's logged model, as in models:/<model_id>
TAG_OPTUNA_STUDY = "optuna.study"
TAG_TRIAL_NUMBER = "optuna.trial_number"
TAG_TRIAL_STATE = "optuna.trial_state"  # COMPLETE, PRUNED or FAIL (TRIAL_STATES)
TAG_FAIL_REASON = "fail_reason"
TAG_THRESHOLD = "threshold"
TAG_IMAGE_SIZE = "image_size"
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"  # setting it renames the run
TAG_NOTE = "mlflow.note.content"  # the run's description in the UI
# On a pruned trial's run: the last epoch it trained, from 1 (the run ends FINISHED, since the
# UI draws KILLED as a failure; ``optuna.trial_state`` says PRUNED).
TAG_PRUNED_AT_EPOCH = "clot_hpo.pruned_at_epoch"
# On the study's parent run: the metric the study optimizes, as trial runs log it (the Optuna
# objective's history key, e.g. ``val_auc``), and Optuna's direction for it. `promote`
# ranks trials by them instead of guessing a direction from a metric's name.
TAG_OBJECTIVE = "clot_hpo.objective"
TAG_DIRECTION = "optuna.direction"

# ----- run parameters read back ---------------------------------------------------------------
# On a trial's run: the level of the intervals its metrics carry (evaluation.confidence_level).
PARAM_CONFIDENCE_LEVEL = "confidence_level"

# In the logged MLflow model's ``metadata`` (MLmodel), what `predict` needs to apply it.
META_THRESHOLD = "threshold"
META_IMAGE_SIZE = "image_size"
META_INPUT = "input"
# How DICOM pixels were windowed in training (``data.dicom``: ``{"window": [center, width] | None,
# "frame": int | None}``): `predict`, `serve` and `evaluate` apply the model with it by default.
META_DICOM = "dicom"

ROLE_STUDY = "study"
ROLE_TRIAL = "trial"
DIRECTIONS = ("maximize", "minimize")

# ----- model version tags (written by `promote`) --------------------------------------------
# sha256 (hex) of the registered model's file, ``data/model.keras`` inside the logged MLflow
# model: loading a registered version checks the file against it.
TAG_MODEL_SHA256 = "model_sha256"
MODEL_FILE_PATH = "data/model.keras"  # the hashed file, relative to the logged model's root
# The promotion gate's decision about the version, moved or not (docs/model-card.md).
GATE_PREFIX = "promotion."
TAG_GATE_DECISION = "promotion.decision"  # first champion | promoted | kept | refused | already champion
TAG_GATE_METRIC = "promotion.metric"  # auc (DeLong) or accuracy (McNemar)
TAG_GATE_DIFFERENCE = "promotion.difference"  # candidate minus champion
TAG_GATE_INTERVAL = "promotion.interval"  # "[low, high]" at 95%
TAG_GATE_P_VALUE = "promotion.p_value"
TAG_GATE_CHAMPION = "promotion.compared_with"  # the champion version compared with ("none")
TAG_GATE_REASON = "promotion.reason"  # the decision in one sentence
TAG_GATE_RULE = "promotion.rule"  # the rule applied (min delta, floors, test sets)

# ----- experiment tags ----------------------------------------------------------------------
TAG_EXPERIMENT = ("clot_hpo.experiment", "true")
# Without it MLflow 3's UI opens an experiment on its GenAI (traces) overview, not the runs.
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")

# ----- the study run's headline metrics -----------------------------------------------------
# Logged on the parent run as trials end, so the runs table says something before the
# parent is expanded: the best completed trial (by TAG_OBJECTIVE and TAG_DIRECTION) and the
# trial counts. ``best_<objective>`` is the best trial's objective metric (``best_val_auc``).
BEST_PREFIX = "best_"
METRIC_BEST_TRIAL = "best_trial"  # the best trial's number
# The best trial's test metrics copied to the parent (``best_test_auc``), with their intervals:
# the search names them from the metric catalogue (``start_study(headline=...)``), and the
# parent run records them in this tag (comma-separated) for a resumed study.
TAG_HEADLINE = "clot_hpo.headline"
METRIC_N_COMPLETE = "n_trials_complete"
METRIC_N_PRUNED = "n_trials_pruned"
METRIC_N_FAILED = "n_trials_failed"

# The Optuna objective value of a completed trial (``end_trial(attrs={"value": ...})``).
METRIC_VALUE = "value"

# ----- the MLflow UI ------------------------------------------------------------------------
# MLflow 3's runs table shows no metric column until one is chosen; a "shared view" (an
# experiment tag the UI reads when the URL says ``viewStateShareKey=<key>``) chooses the
# columns, groups the trials and lays out the charts (:mod:`clot_hpo.tracking.ui_view`), so
# the link that `make mlflow-server` prints opens on them.
UI_VIEW_KEY = "clot-hpo"
TAG_UI_VIEW = f"mlflow.sharedViewState.{UI_VIEW_KEY}"

__all__ = [
    "BEST_PREFIX",
    "DIRECTIONS",
    "EXPERIMENT_KIND_TAG",
    "GATE_PREFIX",
    "META_IMAGE_SIZE",
    "META_DICOM",
    "META_INPUT",
    "META_THRESHOLD",
    "METRIC_BEST_TRIAL",
    "METRIC_N_COMPLETE",
    "METRIC_N_FAILED",
    "METRIC_N_PRUNED",
    "METRIC_VALUE",
    "MODEL_FILE_PATH",
    "ROLE_STUDY",
    "ROLE_TRIAL",
    "TAG_DIGEST",
    "TAG_DIRECTION",
    "TAG_EXPERIMENT",
    "TAG_FAIL_REASON",
    "TAG_HEADLINE",
    "TAG_GATE_CHAMPION",
    "TAG_GATE_DECISION",
    "TAG_GATE_DIFFERENCE",
    "TAG_GATE_INTERVAL",
    "TAG_GATE_METRIC",
    "TAG_GATE_P_VALUE",
    "TAG_GATE_REASON",
    "TAG_GATE_RULE",
    "TAG_IMAGE_SIZE",
    "TAG_MODEL_ID",
    "TAG_MODEL_SHA256",
    "TAG_NOTE",
    "TAG_OBJECTIVE",
    "TAG_OPTUNA_STUDY",
    "TAG_PARENT",
    "TAG_PRUNED_AT_EPOCH",
    "TAG_ROLE",
    "TAG_RUN_NAME",
    "TAG_STUDY",
    "TAG_THRESHOLD",
    "TAG_TRIAL_NUMBER",
    "TAG_TRIAL_STATE",
    "TAG_UI_VIEW",
    "UI_VIEW_KEY",
]
