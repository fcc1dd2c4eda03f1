"""The MLflow side every tracker method shares: the client, retries, the experiment, figures.

:class:`MlflowBackend` is the base of :class:`~clot_hpo.tracking.mlflow_study.MlflowStudyTracker`
and :class:`~clot_hpo.tracking.mlflow_trial.MlflowTrialTracker`, which
:class:`~clot_hpo.tracking.mlflow_tracker.MlflowTracker` combines.

Failure policy: every MLflow call goes through :meth:`MlflowBackend._call`, which retries
with exponential backoff (:mod:`clot_hpo.tracking.retry`) and, when the call still fails,
reports it with ``logging.warning`` and skips it. Only :meth:`MlflowBackend.check_available`
raises (:class:`~clot_hpo.errors.TrackingUnavailable`), before any training starts.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Any

from clot_hpo.errors import ConfigError, TrackingUnavailable
from clot_hpo.tracking.base import as_figure
from clot_hpo.tracking.retry import call_with_retry, is_transient
from clot_hpo.tracking.store import (
    MlflowClient,
    MlflowException,
    check_http_health,
    is_already_exists,
    is_database,
    is_http,
    sqlite_path,
)
from clot_hpo.tracking.tags import EXPERIMENT_KIND_TAG, TAG_EXPERIMENT
from clot_hpo.util import first_line, redact_text, redact_url

log = logging.getLogger("clot_hpo.tracking")

# After a call gave up on a transient error, calls make one attempt each for this long, so an
# outage costs a study one backoff sequence instead of one per logged value.
DEGRADED_S = 60.0


def now_ms() -> int:
    """Milliseconds since the epoch: MLflow's metric timestamps."""
    return int(time.time() * 1000)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


def close_figure(fig: Any) -> None:
    """Close a matplotlib figure (pyplot keeps every open figure alive)."""
    if hasattr(fig, "savefig"):
        with contextlib.suppress(Exception):
            import matplotlib.pyplot as plt

            plt.close(fig)


class MlflowBackend:
    """A study's MLflow experiment, reached through one retrying client.

    Args:
        tracking_uri: ``sqlite:///mlruns/mlflow.db``, ``postgresql://...`` or ``http://host:port``.
        experiment_name: the MLflow experiment (one per study).
        artifact_root: where a new experiment keeps its artifacts, for database URIs (an
            http server decides for itself). Default: MLflow's default.
        log_models: False skips logging models (config ``tracking.log_model``).
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
        out = call_with_retry(
            what,
            fn,
            *args,
            tries=1 if degraded else self.tries,
            backoff_s=self.backoff_s,
            default=failed,
            where=redact_url(self.tracking_uri),
            on_give_up=self._gave_up,
            **kwargs,
        )
        if out is failed:
            return default
        self._degraded_until = 0.0
        return out

    def _gave_up(self, exc: BaseException) -> None:
        if is_transient(exc):
            if time.monotonic() >= self._degraded_until:
                log.warning(
                    "tracking: %s looks unavailable; making one attempt per call for %.0f s",
                    self.tracking_uri,
                    DEGRADED_S,
                )
            self._degraded_until = time.monotonic() + DEGRADED_S

    def _artifact_location(self) -> str | None:
        if self.artifact_root is None or not is_database(self.tracking_uri):
            return None  # an http server (or MLflow's default) decides
        root = Path(self.artifact_root).expanduser().resolve()
        return (root / _safe_name(self.experiment_name)).as_uri()

    def _get_or_create_experiment(self) -> str:
        if self._experiment_id is not None:
            return self._experiment_id
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise ConfigError(
                f"MLflow experiment {self.experiment_name!r} at {redact_url(self.tracking_uri)} is deleted; "
                f"restore it (`mlflow experiments restore --experiment-id {exp.experiment_id}`) "
                "or choose another experiment name"
            )
        if exp is None:
            try:
                exp_id = self.client.create_experiment(
                    self.experiment_name,
                    artifact_location=self._artifact_location(),
                    tags=dict([TAG_EXPERIMENT, EXPERIMENT_KIND_TAG]),
                )
            except MlflowException as exc:
                # Another worker of the same study created it first.
                if not is_already_exists(exc):
                    raise
                created = self.client.get_experiment_by_name(self.experiment_name)
                if created is None:  # created and deleted again meanwhile: nothing sensible to do
                    raise
                exp_id = created.experiment_id
        else:
            exp_id = exp.experiment_id
            if EXPERIMENT_KIND_TAG[0] not in (exp.tags or {}):
                self.client.set_experiment_tag(exp_id, *EXPERIMENT_KIND_TAG)
        self._experiment_id = str(exp_id)
        return self._experiment_id

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
        shown = redact_url(uri)
        if is_http(uri):
            check_http_health(uri)
        else:
            db = sqlite_path(uri)
            try:
                if db is not None:
                    db.expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
                if self.artifact_root and is_database(uri):
                    Path(self.artifact_root).expanduser().mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TrackingUnavailable(f"cannot create the MLflow store for {shown}: {exc}") from exc
        try:
            exp = self.client.get_experiment_by_name(self.experiment_name)
        except Exception as exc:  # noqa: BLE001 - any failure here means "unusable"
            why = redact_text(first_line(exc, limit=300))
            if any(word in why for word in ("401", "UNAUTHENTICATED", "Unauthorized", "credentials")):
                why += (
                    "; the server requires a login: set MLFLOW_TRACKING_USERNAME and "
                    "MLFLOW_TRACKING_PASSWORD in the environment"
                )
            raise TrackingUnavailable(f"MLflow tracking at {shown} is unusable: {why}") from exc
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise ConfigError(
                f"MLflow experiment {self.experiment_name!r} at {shown} is deleted; restore it "
                f"(`mlflow experiments restore --experiment-id {exp.experiment_id}`) or choose "
                "another experiment name"
            )

    def _log_figures(self, run_id: str | None, figures: dict[str, Any] | None, *, folder: str) -> None:
        """Log figures as PNG files of the run, closing each either way.

        A value is a matplotlib figure (or Axes), or the path of a PNG file already rendered
        (what a trial's process spools: :mod:`clot_hpo.tracking.spool`).
        """
        for name, obj in (figures or {}).items():
            fig = None if isinstance(obj, Path) else as_figure(obj)
            try:
                if not run_id:
                    continue
                file = str(name)
                if "." not in Path(file).name:
                    file += ".png"
                if fig is not None:
                    self._call(f"log figure {file}", self.client.log_figure, run_id, fig, f"{folder}{file}")
                else:
                    self._call(f"log figure {file}", self._log_png, run_id, Path(obj), f"{folder}{file}")
            finally:
                if fig is not None:
                    close_figure(fig)

    def _log_png(self, run_id: str, png: Path, artifact_file: str) -> None:
        """Upload ``png`` as the run's artifact ``artifact_file`` (a folder and a file name)."""
        import shutil
        import tempfile

        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="clot-hpo-figure-") as tmp:
            # log_artifact keeps the local file's name: copy it under the artifact's.
            local = Path(tmp) / name
            shutil.copyfile(png, local)
            self.client.log_artifact(run_id, str(local), folder or None)
