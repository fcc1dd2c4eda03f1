"""A real ``mlflow server`` process for tests, on a free loopback port.

Use the ``mlflow_server`` fixture (session-scoped) or the :func:`running_mlflow_server`
context manager. Test modules that need the server import the fixture::

    from tests.support.mlflow_server import mlflow_server  # noqa: F401  (pytest fixture)

Each module that imports it gets its own session-scoped fixture definition, so the process
itself is shared through a reference count here: the first user starts it, the last
finalizer stops it, by process id.

``start_mlflow_server(root, auth=BasicAuth(...))`` starts the compose stack's server instead:
MLflow's basic-auth app, launched through the stack's own entrypoint
(``docker/mlflow-entrypoint.sh``, which refuses placeholder secrets and writes the auth config),
with its login database beside the tracking database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 240.0  # a fresh store's migrations, on a loaded 2-core machine
REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "docker" / "mlflow-entrypoint.sh"


@dataclass(frozen=True)
class BasicAuth:
    """How to start the server with MLflow's basic-auth app: the admin's login."""

    admin_password: str
    admin_username: str = "admin"
    # What the compose stack passes for the PostgreSQL backend; the entrypoint checks it.
    db_password: str = "test-db-password-0123"
    flask_secret_key: str = "test-csrf-signing-key-0123"


@dataclass
class MlflowServer:
    """A started server: its tracking URI and where it keeps its data."""

    uri: str
    port: int
    root: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    _log_file: object = field(repr=False, default=None)
    auth: BasicAuth | None = None

    @property
    def backend_store_uri(self) -> str:
        """The server's own database (read it only through the server)."""
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def log_tail(self, n_chars: int = 4000) -> str:
        """The end of the server's combined stdout/stderr, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mlflow_executable() -> list[str]:
    # The console script next to this interpreter, so the server runs the same MLflow.
    script = Path(sys.executable).with_name("mlflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlflow"]


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _auth_launch(root: Path, auth: BasicAuth) -> tuple[list[str], dict[str, str]]:
    """The stack's entrypoint and its environment, for a server on local files."""
    env = {
        # The entrypoint runs `mlflow` from PATH: this interpreter's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_AUTH_ADMIN_USERNAME": auth.admin_username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": auth.admin_password,
        "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{root / 'basic_auth.db'}",
        "MLFLOW_AUTH_CONFIG_PATH": str(root / "basic_auth.ini"),
        "PGPASSWORD": auth.db_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": auth.flask_secret_key,
    }
    return ["sh", str(ENTRYPOINT), "server", "--app-name", "basic-auth"], env


def start_mlflow_server(
    root: Path,
    *,
    port: int | None = None,
    auth: BasicAuth | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> MlflowServer:
    """Start ``mlflow server`` over ``root/mlflow.db`` and ``root/artifacts``; wait for health.

    With ``auth``: MLflow's basic-auth app through the compose stack's entrypoint.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        # Without these the server starts job workers and takes ~3.6 GB of RAM.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
    )
    launch = [*_mlflow_executable(), "server"]
    if auth is not None:
        launch, auth_env = _auth_launch(root, auth)
        env.update(auth_env)
    env.update(extra_env or {})
    cmd = [
        *launch,
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log_path = root / "server.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed in stop_mlflow_server
    # A new session: the server's workers form one process group we can stop together.
    process = subprocess.Popen(
        cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
    )
    server = MlflowServer(
        uri=uri, port=port, root=root, process=process, log_path=log_path, _log_file=log_file, auth=auth
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop_mlflow_server(server)
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{server.log_tail()}")
        if _healthy(uri) and process.poll() is None:  # our server answered, not another on the port
            return server
        time.sleep(0.5)
    stop_mlflow_server(server)
    raise RuntimeError(f"mlflow server not healthy after {STARTUP_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def stop_mlflow_server(server: MlflowServer, *, timeout: float = 15.0) -> None:
    """Stop the server's process group (by the id we started), then reap it."""
    proc = server.process
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # pgid == pid: started with start_new_session
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    if server._log_file is not None:
        server._log_file.close()  # type: ignore[attr-defined]
        server._log_file = None


@contextmanager
def running_mlflow_server(root: Path | None = None) -> Iterator[MlflowServer]:
    """Context manager: a server for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="mlflow-server-") as tmp:
        server = start_mlflow_server(Path(root) if root else Path(tmp))
        try:
            yield server
        finally:
            stop_mlflow_server(server)


_shared: MlflowServer | None = None
_users = 0


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One ``mlflow server`` for the whole test session (shared by every module using it)."""
    global _shared, _users
    if _shared is None or _shared.process.poll() is not None:
        _shared = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    _users += 1
    try:
        yield _shared
    finally:
        _users -= 1
        if _users == 0 and _shared is not None:
            stop_mlflow_server(_shared)
            _shared = None


# ----- helpers for tracking tests -----------------------------------------------------------
def tiny_keras_model(image_size: int = 32, seed: int = 0) -> object:
    """Input(H, W, 3) raw pixels -> Rescaling -> Conv2D -> GAP -> Dense(1, sigmoid); untrained."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name=f"tiny_{seed}")


def write_images(folder: Path, n: int, *, image_size: int = 32, seed: int = 0) -> list[Path]:
    """``n`` random RGB PNG files in ``folder`` (no patient data anywhere near the tests)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths
