"""The MLflow tracker: one experiment per study, a parent run, one nested child run per trial.

Process model: only the study process builds an :class:`MlflowTracker`; trial processes
spool to files (:mod:`clot_hpo.tracking.spool`) that it forwards from a background thread
while the next trial trains. Every call goes through :class:`mlflow.MlflowClient` with an
explicit run id, so no fluent "active run" exists anywhere (safe with several workers).

The tracker is assembled from one module per concern:

==========================================  ===============================================
:mod:`clot_hpo.tracking.mlflow_backend`     client, retries, the experiment, the health check
:mod:`clot_hpo.tracking.mlflow_study`       the study's parent run, trial runs, headline
:mod:`clot_hpo.tracking.mlflow_trial`       params, epochs, evaluation, figures, the model
:mod:`clot_hpo.tracking.model_packaging`    the Keras model as an MLflow model
:mod:`clot_hpo.tracking.tags`               tag names (the contract with the registry)
:mod:`clot_hpo.tracking.store`              URIs, the store's health, MLflow's environment
==========================================  ===============================================
"""

from __future__ import annotations

from clot_hpo.tracking.base import Tracker
from clot_hpo.tracking.mlflow_backend import DEGRADED_S
from clot_hpo.tracking.mlflow_study import RUN_END_STATUSES, STATUS_OF_STATE, MlflowStudyTracker
from clot_hpo.tracking.mlflow_trial import MlflowTrialTracker


class MlflowTracker(MlflowStudyTracker, MlflowTrialTracker, Tracker):
    """Logs a study to MLflow (a database URI or an ``http://`` MLflow server).

    Args:
        tracking_uri: ``sqlite:///mlruns/mlflow.db``, ``postgresql://...`` or ``http://host:port``.
        experiment_name: the MLflow experiment (one per study).
        artifact_root: where a new experiment keeps its artifacts, for database URIs (an
            http server decides for itself). Default: MLflow's default.
        log_models: False skips :meth:`log_model` (config ``tracking.log_model``).
        tries: attempts per MLflow call; backoff_s: the first wait between attempts.
    """


__all__ = ["DEGRADED_S", "RUN_END_STATUSES", "STATUS_OF_STATE", "MlflowTracker"]
