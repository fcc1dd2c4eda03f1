"""The MLflow tracker: one experiment per study, a parent run, one nested child run per trial.

Process model: only the study process builds an :class:`MlflowTracker`; trial processes
spool to files (:mod:`clot_hpo.tracking.spool`) that it forwards from a background thread
while the next trial trains. Every call goes through :class:`mlflow.MlflowClient` with an
explicit run id, so no fluent "active run" exists anywhere (safe with several workers).

Status mapping (Optuna trial state -> MLflow run status): ``COMPLETE -> FINISHED``,
``PRUNED -> KILLED``, ``FAIL -> FAILED``; the Optuna state itself is kept in the tag
``optuna.trial_state`` and the reason of a failure in ``fail_reason``.

Failure policy: every MLflow call is retried with exponential backoff
(:mod:`clot_hpo.tracking.retry`) and, when it still fails, reported with
``logging.warning`` and skipped. Only :meth:`MlflowTracker.check_available` raises
(:class:`~clot_hpo.errors.TrackingUnavailable`), before any training starts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

# Set before MLflow is imported anywhere in this process: patient data stays on the machine.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# MLflow's HTTP client retries 7 times with a backoff reaching minutes and waits 120 s for a
# silent server; our retry helper does the retrying (and reports it), so MLflow's own requests
# fail fast. Users may still override these.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
# MLflow prints "View run ... at: URL" to stdout whenever a run ends on an http server; the
# study's console output is ours (and predict's stdout is JSON lines).
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag  # noqa: E402

from clot_hpo.errors import ConfigError, TrackingUnavailable  # noqa: E402
from clot_hpo.tracking import keras_file_flavor  # noqa: E402
from clot_hpo.tracking.base import TRIAL_STATES, Tracker, to_plain  # noqa: E402
from clot_hpo.tracking.retry import call_with_retry, is_transient  # noqa: E402

log = logging.getLogger("clot_hpo.tracking")

# Optuna trial state -> MLflow run status.
STATUS_OF_STATE = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
RUN_END_STATUSES = ("FINISHED", "FAILED", "KILLED")

# Tags (shared with clot_hpo.registry, which finds runs and models by them).
TAG_ROLE = "clot_hpo.role"  # "study" on the parent run, "trial" on children
TAG_STUDY = "clot_hpo.study"
TAG_DIGEST = "clot_hpo.dataset_digest"
TAG_MODEL_ID = "clot_hpo.model_id"
TAG_OPTUNA_STUDY = "optuna.study"
TAG_TRIAL_NUMBER = "optuna.trial_number"
TAG_TRIAL_STATE = "optuna.trial_state"
TAG_FAIL_REASON = "fail_reason"
TAG_THRESHOLD = "threshold"
TAG_IMAGE_SIZE = "image_size"
TAG_PARENT = "mlflow.parentRunId"
# Without it MLflow 3's UI opens an experiment on its GenAI (traces) overview, not the runs.
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")

MODEL_NAME_IN_RUN = "model"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
MAX_TAG_LENGTH = 8000  # MLflow's limit on a tag value
MAX_DIGEST_LENGTH = 36  # MLflow's limit on a dataset digest; the full one is in TAG_DIGEST
HEALTH_TIMEOUT_S = 2.0
HEALTH_BUDGET_S = 5.0
# After a call gave up on a transient error, calls make one attempt each for this long, so an
# outage costs a study one backoff sequence instead of one per logged value.
DEGRADED_S = 60.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _is_database(uri: str) -> bool:
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    return scheme in ("sqlite", "postgresql", "mysql", "mssql")


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for in-memory or other URIs)."""
    if not uri.startswith("sqlite:"):
        return None
    path = uri.split(":///", 1)[1] if ":///" in uri else ""
    path = path.split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


def _quote(value: str) -> str:
    """A string literal for an MLflow filter (single quotes escaped)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _as_figure(obj: Any) -> Any:
    """A matplotlib Figure from a Figure, an Axes or an array of Axes (Optuna returns Axes)."""
    if hasattr(obj, "savefig") or type(obj).__module__.startswith("plotly"):
        return obj
    if hasattr(obj, "figure"):
        return obj.figure
    try:  # numpy array of Axes
        first = next(iter(getattr(obj, "flat", obj)))
        return first.figure
    except (TypeError, StopIteration, AttributeError):
        return obj


def _close(fig: Any) -> None:
    if hasattr(fig, "savefig"):
        with contextlib.suppress(Exception):
            import matplotlib.pyplot as plt

            plt.close(fig)


def _finite_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


@lru_cache(maxsize=1)
def model_pip_requirements() -> tuple[str, ...]:
    """Exact pins of what loading the model needs, from the installed versions.

    Passed explicitly because MLflow's inference of requirements costs 8-10 s per model.
    """
    reqs = []
    tf_dist = None
    for dist in ("tensorflow-cpu", "tensorflow", "tensorflow-macos"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            reqs.append(f"{dist}=={metadata.version(dist)}")
            tf_dist = dist
            break
    if tf_dist is None:
        log.debug("no TensorFlow distribution found for the model's requirements")
    for dist in ("keras", "mlflow", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            reqs.append(f"{dist}=={metadata.version(dist)}")
    return tuple(reqs)


def model_signature(image_size: int) -> Any:
    """Raw float32 pixels ``(-1, H, W, 3)`` in [0, 255] in, probabilities ``(-1, 1)`` out."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(image_size), int(image_size), 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1))]),
    )


@contextlib.contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at ``uri`` for a block.

    ``Model.log`` and the model loaders resolve their client from these globals (and from
    the ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` variables the setters export);
    both are restored afterwards so our URI is not left behind for unrelated code.
    """
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    env_keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    prev_env = {k: os.environ.get(k) for k in env_keys}
    prev_tracking = tracking_utils._tracking_uri
    prev_registry = registry_utils._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(prev_tracking)  # None is accepted and unsets the variable
        registry_utils._registry_uri = prev_registry
        for key, value in prev_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class MlflowTracker(Tracker):
    """Logs a study to MLflow (a database URI or an ``http://`` MLflow server).

    Args:
        tracking_uri: ``sqlite:///mlruns/mlflow.db``, ``postgresql://...`` or ``http://host:port``.
        experiment_name: the MLflow experiment (one per study).
        artifact_root: where a new experiment keeps its artifacts, for database URIs (an
            http server decides for itself). Default: MLflow's default.
        log_models: False skips :meth:`log_model` (config ``tracking.log_model``).
        tries: attempts per MLflow call; backoff_s: the first wait between attempts.
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        experiment_name: str,
        artifact_root: str | None = None,
        log_models: bool = True,
        tries: int = 7,
        backoff_s: float = 1.0,
    ) -> None:
        if not tracking_uri:
            raise ConfigError("the MLflow tracking URI must not be empty")
        if not experiment_name:
            raise ConfigError("the MLflow experiment name must not be empty")
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.artifact_root = artifact_root
        self.log_models = log_models
        self.tries = tries
        self.backoff_s = backoff_s
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.study_name: str | None = None
        self.dataset_digest: str | None = None
        self._last_epoch: dict[str, int] = {}  # run id -> last epoch logged by this process
        self._degraded_until = 0.0

    # ----- plumbing -------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # Picklable (a process pool, say): the client is rebuilt on first use after unpickling.
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self) -> MlflowClient:
        """The MLflow client (created on first use: constructing a tracker is free)."""
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, default: Any = None, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with retries; ``default`` (and a warning) when it fails."""
        failed = object()
        degraded = time.monotonic() < self._degraded_until
        out = call_with_retry(what, fn, *args, tries=1 if degraded else self.tries, backoff_s=self.backoff_s,
                              default=failed, where=self.tracking_uri, on_give_up=self._gave_up, **kwargs)
        if out is failed:
            return default
        self._degraded_until = 0.0
        return out

    def _gave_up(self, exc: BaseException) -> None:
        if is_transient(exc):
            if time.monotonic() >= self._degraded_until:
                log.warning("tracking: %s looks unavailable; making one attempt per call for %.0f s",
                            self.tracking_uri, DEGRADED_S)
            self._degraded_until = time.monotonic() + DEGRADED_S

    def _artifact_location(self) -> str | None:
        if self.artifact_root is None or not _is_database(self.tracking_uri):
            return None  # an http server (or MLflow's default) decides
        root = Path(self.artifact_root).expanduser().resolve()
        return (root / _safe_name(self.experiment_name)).as_uri()

    def _get_or_create_experiment(self) -> str:
        if self._experiment_id is not None:
            return self._experiment_id
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise ConfigError(
                f"MLflow experiment {self.experiment_name!r} at {self.tracking_uri} is deleted; "
                f"restore it (`mlflow experiments restore --experiment-id {exp.experiment_id}`) "
                "or choose another experiment name"
            )
        if exp is None:
            try:
                exp_id = self.client.create_experiment(
                    self.experiment_name, artifact_location=self._artifact_location(),
                    tags={"clot_hpo.experiment": "true", EXPERIMENT_KIND_TAG[0]: EXPERIMENT_KIND_TAG[1]},
                )
            except mlflow.exceptions.MlflowException as exc:
                # Another worker of the same study created it first.
                if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp_id = self.client.get_experiment_by_name(self.experiment_name).experiment_id
        else:
            exp_id = exp.experiment_id
            if EXPERIMENT_KIND_TAG[0] not in (exp.tags or {}):
                self.client.set_experiment_tag(exp_id, *EXPERIMENT_KIND_TAG)
        self._experiment_id = str(exp_id)
        return self._experiment_id

    # ----- study process --------------------------------------------------------------------
    def check_available(self) -> None:
        """Fail fast, before any training, when the tracking backend cannot be used.

        http(s) servers must answer ``/health`` within ~5 s; for ``sqlite:///`` URIs the
        database folder (and the artifact root) are created. The backend is then queried
        once, and a deleted experiment of the same name is reported.

        Raises:
            TrackingUnavailable: naming the URI and the reason.
            ConfigError: the experiment exists but is deleted.
        """
        uri = self.tracking_uri
        if _is_http(uri):
            self._check_http_health(uri)
        else:
            db = _sqlite_path(uri)
            try:
                if db is not None:
                    db.expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
                if self.artifact_root and _is_database(uri):
                    Path(self.artifact_root).expanduser().mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TrackingUnavailable(f"cannot create the MLflow store for {uri}: {exc}") from exc
        try:
            exp = self.client.get_experiment_by_name(self.experiment_name)
        except Exception as exc:  # noqa: BLE001 - any failure here means "unusable"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrackingUnavailable(f"MLflow tracking at {uri} is unusable: {first[:300]}") from exc
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise ConfigError(
                f"MLflow experiment {self.experiment_name!r} at {uri} is deleted; restore it "
                f"(`mlflow experiments restore --experiment-id {exp.experiment_id}`) or choose "
                "another experiment name"
            )

    @staticmethod
    def _check_http_health(uri: str) -> None:
        url = uri.rstrip("/") + "/health"
        deadline = time.monotonic() + HEALTH_BUDGET_S
        last: str = "no answer"
        while True:
            left = deadline - time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=max(0.2, min(HEALTH_TIMEOUT_S, left))) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code} from {url}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            if deadline - time.monotonic() < 0.5:
                break
            time.sleep(0.5)
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({last}); start it (`make mlflow-server`) "
            "or use a local store (--tracking-uri sqlite:///mlruns/mlflow.db)"
        )

    def start_study(self, study_name: str, *, tags: dict[str, str] | None = None) -> str:
        """Open the study's parent run, or reopen it on resume (found by its tags)."""
        self.study_name = study_name
        run_id = self._call(f"start the study run of {study_name!r}", self._start_study, study_name,
                            dict(tags or {}), default="")
        self.parent_run_id = run_id or None
        return run_id

    def _start_study(self, study_name: str, tags: dict[str, str]) -> str:
        exp_id = self._get_or_create_experiment()
        found = self.client.search_runs(
            [exp_id],
            filter_string=f"tags.`{TAG_ROLE}` = 'study' and tags.`{TAG_STUDY}` = {_quote(study_name)}",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        all_tags = {**tags, TAG_ROLE: "study", TAG_STUDY: study_name, TAG_OPTUNA_STUDY: study_name}
        if found:
            run = found[0]
            run_id = run.info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:MAX_TAG_LENGTH]) for k, v in all_tags.items()])
            self.dataset_digest = self.dataset_digest or run.data.tags.get(TAG_DIGEST)
            log.info("tracking: resumed study run %s of %r in experiment %r", run_id, study_name,
                     self.experiment_name)
            return run_id
        run = self.client.create_run(exp_id, run_name=study_name,
                                     tags={k: str(v)[:MAX_TAG_LENGTH] for k, v in all_tags.items()})
        # Workers started together may each have created a parent run: let the others' land,
        # then every worker adopts the earliest and deletes its own duplicate.
        time.sleep(1.0)
        every = self.client.search_runs(
            [exp_id],
            filter_string=f"tags.`{TAG_ROLE}` = 'study' and tags.`{TAG_STUDY}` = {_quote(study_name)}",
            max_results=100,
        )
        first = min(every, key=lambda r: (r.info.start_time, r.info.run_id), default=run)
        if first.info.run_id != run.info.run_id:
            self.client.delete_run(run.info.run_id)
            return first.info.run_id
        log.info("tracking: study run %s of %r in experiment %r at %s", run.info.run_id, study_name,
                 self.experiment_name, self.tracking_uri)
        return run.info.run_id

    def log_study_inputs(
        self,
        *,
        config: dict[str, Any],
        search_spaces: dict[str, Any],
        manifest_path: Path | None,
        dataset_digest: str | None,
    ) -> None:
        """Attach ``config.yaml``, ``search_spaces/*.yaml``, the split manifest and the dataset.

        The dataset is logged as an MLflow dataset input built from the manifest (paths,
        labels, groups, splits: never pixels); its digest is cut to MLflow's 36 characters,
        and the full digest is the run tag ``clot_hpo.dataset_digest``.
        """
        run_id = self.parent_run_id
        if not run_id:
            return
        if dataset_digest:
            self.dataset_digest = dataset_digest
            self._call("tag the dataset digest", self.client.set_tag, run_id, TAG_DIGEST, dataset_digest)
        self._call("log config.yaml", self.client.log_dict, run_id, to_plain(config), "config.yaml")
        for name, space in (search_spaces or {}).items():
            self._log_search_space(run_id, str(name), space)
        if manifest_path is not None:
            manifest_path = Path(manifest_path)
            self._call(f"log the split manifest {manifest_path}", self.client.log_artifact, run_id,
                       str(manifest_path), "data")
            self._call("log the dataset input", self._log_dataset, run_id, manifest_path, dataset_digest, config)

    def _log_search_space(self, run_id: str, name: str, space: Any) -> None:
        stem = Path(name).name
        stem = stem.rsplit(".", 1)[0] if stem.endswith((".yaml", ".yml")) else stem
        if isinstance(space, (str, Path)) and Path(space).is_file():
            with tempfile.TemporaryDirectory() as tmp:
                dst = Path(tmp) / f"{stem}.yaml"
                dst.write_bytes(Path(space).read_bytes())
                self._call(f"log search space {stem}", self.client.log_artifact, run_id, str(dst), "search_spaces")
        else:
            self._call(f"log search space {stem}", self.client.log_dict, run_id, to_plain(space),
                       f"search_spaces/{stem}.yaml")

    def _log_dataset(self, run_id: str, manifest: Path, digest: str | None, config: dict[str, Any]) -> None:
        import pandas as pd

        df = pd.read_csv(manifest)
        data_path = (config.get("data") or {}).get("path") if isinstance(config, dict) else None
        name = Path(str(data_path)).name if data_path else manifest.stem
        targets = "label" if "label" in df.columns else None
        with warnings.catch_warnings():
            # Schema hints about integer columns and source ambiguity: irrelevant for a manifest.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                df, source=str(data_path or manifest), targets=targets, name=name,
                digest=(digest or None) and digest[:MAX_DIGEST_LENGTH],
            )
            entity = dataset._to_mlflow_entity()  # the schema is inferred here
        self.client.log_inputs(
            run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])]
        )

    def start_trial(self, trial_number: int, *, tags: dict[str, str] | None = None) -> str:
        """Open ``trial-<n>`` under the study run (the same run again if it already exists)."""
        return self._call(f"start the run of trial {trial_number}", self._start_trial, int(trial_number),
                          dict(tags or {}), default="")

    def _start_trial(self, number: int, tags: dict[str, str]) -> str:
        exp_id = self._get_or_create_experiment()
        study = self.study_name or self.experiment_name
        all_tags = {
            **{k: str(v)[:MAX_TAG_LENGTH] for k, v in tags.items()},
            TAG_ROLE: "trial",
            TAG_STUDY: study,
            TAG_OPTUNA_STUDY: study,
            TAG_TRIAL_NUMBER: str(number),
        }
        if self.parent_run_id:
            all_tags[TAG_PARENT] = self.parent_run_id
            existing = self.client.search_runs(
                [exp_id],
                filter_string=(f"tags.`{TAG_PARENT}` = {_quote(self.parent_run_id)} and "
                               f"tags.`{TAG_TRIAL_NUMBER}` = '{number}'"),
                max_results=1,
            )
            if existing:
                run_id = existing[0].info.run_id
                self.client.update_run(run_id, status="RUNNING")
                return run_id
        if self.dataset_digest:
            all_tags[TAG_DIGEST] = self.dataset_digest
        run = self.client.create_run(exp_id, run_name=f"trial-{number}", tags=all_tags)
        return run.info.run_id

    def end_trial(
        self,
        run_id: str,
        state: str,
        *,
        reason: str | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        """Close a trial's run: ``COMPLETE -> FINISHED``, ``PRUNED -> KILLED``, ``FAIL -> FAILED``.

        ``attrs`` (e.g. Optuna user attributes) become metrics when they are finite numbers
        and tags otherwise.
        """
        if state not in TRIAL_STATES:
            raise ValueError(f"`state` must be one of {list(TRIAL_STATES)}, but got {state!r}")
        if not run_id:
            return
        tags = [RunTag(TAG_TRIAL_STATE, state)]
        if reason:
            tags.append(RunTag(TAG_FAIL_REASON, str(reason)[:MAX_TAG_LENGTH]))
        metrics = []
        ts = _now_ms()
        for key, value in (attrs or {}).items():
            number = _finite_float(value) if not isinstance(value, bool) else None
            if number is not None:
                metrics.append(Metric(str(key), number, ts, 0))
            else:
                tags.append(RunTag(str(key), str(value)[:MAX_TAG_LENGTH]))
        self._call(f"tag the end of run {run_id}", self.client.log_batch, run_id, metrics=metrics, tags=tags)
        self._call(f"end run {run_id} as {STATUS_OF_STATE[state]}", self.client.set_terminated, run_id,
                   STATUS_OF_STATE[state])

    def close_orphaned_trials(self, *, keep: set[int] | None = None,
                              reason: str = "the study process ended before this trial did") -> list[int]:
        """End the study's child runs still RUNNING (a crash left them) as FAILED.

        For resume: pass the trial numbers that are legitimately running elsewhere (other
        workers of a shared study) as ``keep``. Returns the trial numbers closed.
        """
        if not self.parent_run_id:
            return []
        exp_id = self._call("find the experiment", self._get_or_create_experiment)
        if exp_id is None:
            return []
        runs = self._call(
            "find orphaned trial runs", self.client.search_runs, [exp_id],
            filter_string=f"tags.`{TAG_PARENT}` = {_quote(self.parent_run_id)} and attributes.status = 'RUNNING'",
            max_results=1000, default=[],
        )
        closed = []
        for run in runs:
            number = run.data.tags.get(TAG_TRIAL_NUMBER)
            if number is not None and keep and int(number) in keep:
                continue
            self.end_trial(run.info.run_id, "FAIL", reason=reason)
            if number is not None:
                closed.append(int(number))
        return sorted(closed)

    def log_study_summary(self, trials_csv: Path, figures: dict[str, Any]) -> None:
        """Attach the all-trials CSV and Optuna's figures (matplotlib Figures or Axes)."""
        run_id = self.parent_run_id
        if run_id and trials_csv is not None and Path(trials_csv).is_file():
            self._call("log the trials CSV", self.client.log_artifact, run_id, str(trials_csv))
        self._log_figures(run_id, figures, folder="")

    def end_study(self, status: str = "FINISHED") -> None:
        """Close the parent run (``FINISHED``, ``FAILED`` or ``KILLED`` when interrupted)."""
        if status not in RUN_END_STATUSES:
            raise ValueError(f"`status` must be one of {list(RUN_END_STATUSES)}, but got {status!r}")
        if self.parent_run_id:
            self._call(f"end the study run as {status}", self.client.set_terminated, self.parent_run_id, status)

    # ----- trial process --------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Log the trial's hyperparameters (one batched call)."""
        if not run_id or not params:
            return
        batch = [Param(str(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        self._call("log params", self.client.log_batch, run_id, params=batch)

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
        """Log one epoch's metrics in one ``log_batch`` call (step = epoch)."""
        if not run_id or not metrics:
            return
        ts = _now_ms()
        batch = []
        for key, value in metrics.items():
            number = _to_float(value)
            if number is not None:  # NaN/inf are kept: a diverging loss is information
                batch.append(Metric(str(key), number, ts, int(epoch)))
        if batch:
            self._call(f"log epoch {epoch} metrics", self.client.log_batch, run_id, metrics=batch)
        self._last_epoch[run_id] = max(int(epoch), self._last_epoch.get(run_id, -1))

    def log_evaluation(
        self,
        run_id: str,
        *,
        metrics: dict[str, float],
        artifacts: dict[str, Any],
        figures: dict[str, Any],
    ) -> None:
        """Evaluation metrics in one batch, JSON artifacts via ``log_dict``, then the figures."""
        if not run_id:
            for fig in (figures or {}).values():
                _close(_as_figure(fig))
            return
        ts = _now_ms()
        step = self._evaluation_step(run_id, metrics)
        batch = [Metric(str(k), v, ts, step) for k, v in ((k, _to_float(v)) for k, v in metrics.items())
                 if v is not None]
        if batch:
            self._call("log evaluation metrics", self.client.log_batch, run_id, metrics=batch)
        if "threshold" in metrics and _finite_float(metrics["threshold"]) is not None:
            self._call("tag the threshold", self.client.set_tag, run_id, TAG_THRESHOLD,
                       repr(float(metrics["threshold"])))
        for name, payload in (artifacts or {}).items():
            self._call(f"log {name}", self.client.log_dict, run_id, to_plain(payload), str(name))
        self._log_figures(run_id, figures, folder="")

    def _evaluation_step(self, run_id: str, metrics: dict[str, Any]) -> int:
        """The step of the evaluation metrics: one past the last epoch.

        Keras logs ``val_auc``/``val_accuracy`` per epoch under the same names as the
        evaluation; MLflow shows a run's value at its highest step, so the evaluation (the
        threshold-aware, full-split figure) must come after the last epoch to be the one shown
        and compared (``clot-hpo promote``). Known in the trial process; otherwise it is read
        back from the metric histories of the clashing names.
        """
        if run_id in self._last_epoch:
            return self._last_epoch[run_id] + 1
        run = self._call("read the run's metrics", self.client.get_run, run_id)
        if run is None:
            return 0
        clashing = [k for k in metrics if k in run.data.metrics]
        last = -1
        for key in clashing[:8]:
            history = self._call(f"read the history of {key}", self.client.get_metric_history, run_id, key,
                                 default=[])
            last = max([last, *(m.step for m in history)])
        return last + 1

    def _log_figures(self, run_id: str | None, figures: dict[str, Any] | None, *, folder: str) -> None:
        for name, obj in (figures or {}).items():
            fig = _as_figure(obj)
            try:
                if not run_id:
                    continue
                file = str(name)
                if type(fig).__module__.startswith("plotly"):
                    file = file.rsplit(".", 1)[0] + ".html"  # PNG export would need kaleido
                elif "." not in Path(file).name:
                    file += ".png"
                self._call(f"log figure {file}", self.client.log_figure, run_id, fig, f"{folder}{file}")
            finally:
                _close(fig)

    def log_model(self, run_id: str, model: Any, *, image_size: int, threshold: float) -> bool:
        """Log the Keras model as an MLflow model of the trial's run, and its weights file.

        ``model`` is a Keras model or the ``.keras`` file a trial process saved (the study
        process logs from the file, without importing Keras). The MLflow model has a
        signature (float32 ``(-1, H, W, 3)`` raw [0, 255] pixels in, ``(-1, 1)``
        probabilities out), explicit pinned ``pip_requirements`` and no ``input_example``
        (it crashes ``mlflow.keras.log_model`` in MLflow 3.17). The run is tagged with
        ``threshold``, ``image_size`` and ``clot_hpo.model_id``.

        Returns:
            True when the MLflow model was stored.
        """
        if not run_id or not self.log_models:
            return False
        tags = [RunTag(TAG_THRESHOLD, repr(float(threshold))), RunTag(TAG_IMAGE_SIZE, str(int(image_size)))]
        self._call("tag threshold and image size", self.client.log_batch, run_id, tags=tags)
        with tempfile.TemporaryDirectory(prefix="clot-hpo-model-") as tmp:
            if isinstance(model, (str, Path)):
                keras_file = Path(model)
            else:
                keras_file = Path(tmp) / keras_file_flavor.MODEL_FILE
                model.save(keras_file)
            model_id = self._call("log the model", self._log_mlflow_model, run_id, keras_file, int(image_size),
                                  float(threshold), default=None)
            if model_id:
                self._call("tag the model id", self.client.set_tag, run_id, TAG_MODEL_ID, model_id)
            self._call("log the weights file", self._log_weights, run_id, keras_file)
        return bool(model_id)

    def _log_mlflow_model(self, run_id: str, keras_file: Path, image_size: int, threshold: float) -> str:
        from mlflow.models import Model

        run = self.client.get_run(run_id)
        params = dict(run.data.params)
        logged = self.client.create_logged_model(
            experiment_id=run.info.experiment_id,
            name=MODEL_NAME_IN_RUN,
            source_run_id=run_id,
            params={k: v[:MAX_PARAM_LENGTH] for k, v in params.items()},
            tags={TAG_THRESHOLD: repr(threshold), TAG_IMAGE_SIZE: str(image_size),
                  **({TAG_STUDY: run.data.tags[TAG_STUDY]} if TAG_STUDY in run.data.tags else {})},
            model_type="keras-binary-classifier",
        )
        # The model's output step: the evaluation's step, so the UI links the evaluation
        # metrics (not epoch 0's) to this model.
        step = self._evaluation_step(run_id, {"val_auc": 0.0, "val_accuracy": 0.0, "val_loss": 0.0})
        with global_tracking_uri(self.tracking_uri):
            # Model.log (what mlflow.keras.log_model calls) takes `run_id` and `model_id`: the
            # model is attached to this run without any fluent active run.
            Model.log(
                artifact_path=None,
                name=MODEL_NAME_IN_RUN,
                flavor=keras_file_flavor,
                model=keras_file,
                run_id=run_id,
                model_id=logged.model_id,
                signature=model_signature(image_size),
                pip_requirements=list(model_pip_requirements()),
                metadata={"image_size": image_size, "threshold": threshold,
                          "input": "raw RGB pixels in [0, 255], float32"},
                await_registration_for=0,
                step=step,
            )
        return logged.model_id

    def _log_weights(self, run_id: str, keras_file: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="clot-hpo-weights-") as tmp:
            self.client.log_artifact(run_id, str(keras_file_flavor.extract_weights(keras_file, tmp)))


def _to_float(value: Any) -> float | None:
    """A Python float of a number (NumPy scalars and 0-d tensors too), or None."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
