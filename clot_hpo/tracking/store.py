"""The MLflow store as the tracker and the registry both reach it: URIs, health, clients, links.

Importing this module sets MLflow's environment defaults (no telemetry, fast-failing HTTP,
no progress bars or "View run" lines on stdout) before MLflow is imported, so every module
that talks to MLflow imports it through here: ``from clot_hpo.tracking.store import
MlflowClient, MlflowException, entities``. Users may still override each variable.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Set before MLflow is imported anywhere in this process: patient data stays on the machine.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# MLflow's HTTP client retries 7 times with a backoff reaching minutes and waits 120 s for a
# silent server; our retry helper does the retrying (and reports it), so MLflow's own requests
# fail fast.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
# MLflow prints "View run ... at: URL" to stdout whenever a run ends on an http server, and
# download progress bars: the study's console output is ours, and predict's stdout is JSON lines.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow import MlflowClient, entities  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from clot_hpo.errors import ConfigError, TrackingUnavailable  # noqa: E402
from clot_hpo.util import redact_url  # noqa: E402

HEALTH_TIMEOUT_S = 2.0  # one /health request
HEALTH_BUDGET_S = 5.0  # all of them: a server restarting gets this long
# MLflow error codes meaning "no such thing" (they differ between the SQL store and REST).
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"})
ALREADY_EXISTS_CODES = frozenset({"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"})
DEFAULT_UI = "http://127.0.0.1:5000"  # what `make mlflow-server` serves
# MLflow's limits on what it stores.
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
MAX_DIGEST_LENGTH = 36  # a dataset digest; the full one is the run tag TAG_DIGEST


# ----- URIs ---------------------------------------------------------------------------------
def is_http(uri: str) -> bool:
    """Whether ``uri`` names an MLflow server (``http://`` or ``https://``)."""
    return uri.startswith(("http://", "https://"))


def is_database(uri: str) -> bool:
    """Whether ``uri`` is a database store MLflow opens itself (SQLite, PostgreSQL, ...)."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    return scheme in ("sqlite", "postgresql", "mysql", "mssql")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for in-memory or other URIs)."""
    if not uri.startswith("sqlite:"):
        return None
    path = uri.split(":///", 1)[1] if ":///" in uri else ""
    path = path.split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def quote(value: str) -> str:
    """A string literal for an MLflow search filter (backslashes and single quotes escaped)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def runs_url(server: str, experiment_id: str, *, view: str | None = None, charts: bool = False) -> str:
    """The MLflow UI's runs of an experiment, in its model-training view.

    MLflow 3's UI opens an experiment on its GenAI view (traces) unless the URL asks for
    ``workflowType=machine_learning``. ``view`` names a shared view stored on the experiment
    (``mlflow.sharedViewState.<view>``; only when it exists, or the UI drops the whole
    link): the study's columns, groups and charts (:mod:`clot_hpo.tracking.ui_view`).
    ``charts`` opens the chart view (``compareRunsMode=CHART``) instead of the table.
    """
    url = f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if view:
        url += f"&viewStateShareKey={view}"
    return f"{url}&compareRunsMode=CHART" if charts else url


# ----- errors -------------------------------------------------------------------------------
def error_code(exc: BaseException) -> str:
    """The MLflow error code of ``exc`` ("" for other errors)."""
    return str(getattr(exc, "error_code", "") or "")


def is_not_found(exc: BaseException) -> bool:
    """Whether ``exc`` says the requested run, model, version or alias does not exist."""
    return error_code(exc) in NOT_FOUND_CODES


def is_already_exists(exc: BaseException) -> bool:
    """Whether ``exc`` says the experiment or registered model exists already."""
    return error_code(exc) in ALREADY_EXISTS_CODES


# ----- reaching the store -------------------------------------------------------------------
def check_http_health(uri: str) -> None:
    """Wait up to ~5 s for ``GET <uri>/health`` to answer 200.

    Raises:
        TrackingUnavailable: naming the server and the last answer (or its absence).
    """
    # /health needs no login, and urllib cannot take one in the URL (user:password@host).
    parts = urllib.parse.urlsplit(uri)
    url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl().rstrip("/") + "/health"
    deadline = time.monotonic() + HEALTH_BUDGET_S
    last = "no answer"
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
        f"MLflow tracking server {redact_url(uri)} is unreachable ({last}); start it (`make mlflow-server`) "
        "or use a local store (--tracking-uri sqlite:///mlruns/mlflow.db)"
    )


def open_client(tracking_uri: str) -> MlflowClient:
    """A client for an existing store (also its model registry), after a quick reachability check.

    For reading what a study wrote: a server must answer ``/health``, and a SQLite file must
    exist (MLflow would otherwise create an empty store and report everything as missing).

    Raises:
        TrackingUnavailable: the server does not answer.
        ConfigError: the SQLite file does not exist.
    """
    if is_http(tracking_uri):
        check_http_health(tracking_uri)
    else:
        db = sqlite_path(tracking_uri)
        if db is not None and not db.expanduser().exists():
            raise ConfigError(f"no MLflow store at {tracking_uri}: {db} does not exist (run a search first)")
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def search_all_runs(client: MlflowClient, experiment_id: str, filter_string: str) -> Iterator[Any]:
    """Every run of an experiment matching ``filter_string``, page by page."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


@contextlib.contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at ``uri`` for a block.

    ``Model.log``, ``get_model_info`` and the model loaders resolve their client from these
    globals (and from the ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` variables the
    setters export); both are restored afterwards so our URI is not left behind for
    unrelated code.
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
        # MLflow accepts None (it unsets the variable), though its annotation says str.
        mlflow.set_tracking_uri(prev_tracking)  # type: ignore[arg-type]
        registry_utils._registry_uri = prev_registry
        for key, value in prev_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


__all__ = [
    "DEFAULT_UI",
    "MAX_DIGEST_LENGTH",
    "MAX_PARAM_LENGTH",
    "MAX_TAG_LENGTH",
    "MlflowClient",
    "MlflowException",
    "entities",
    "check_http_health",
    "error_code",
    "global_tracking_uri",
    "is_already_exists",
    "is_database",
    "is_http",
    "is_not_found",
    "open_client",
    "quote",
    "runs_url",
    "search_all_runs",
    "sqlite_path",
]
