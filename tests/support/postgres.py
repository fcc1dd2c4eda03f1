"""A throwaway PostgreSQL cluster for tests and benchmarks.

The Debian ``postgresql`` package ships ``initdb``/``pg_ctl`` under
``/usr/lib/postgresql/<version>/bin``. Both refuse to run as root, so when this process is root
they run as the ``postgres`` user through ``runuser``; the cluster's data directory and its unix
socket live in one temporary folder owned by that user. The server listens on 127.0.0.1 only, on a
free port, with ``trust`` authentication (a local throwaway: nothing else can reach it) and
``fsync=off`` for speed. Stopping uses the data directory, so ``stop()`` then ``start()`` brings the
same cluster back (the fault tests stop the database in the middle of a study).

Usage in pytest::

    from tests.support.postgres import postgres_session  # noqa: F401  (the fixture)

    def test_x(postgres_session):
        url = postgres_session.create_database("optuna")

and outside pytest (benchmarks)::

    with postgres_server() as pg:
        url = pg.create_database("optuna")
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

POSTGRES_USER = "postgres"
SKIP_REASON = (
    "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; "
    "run `make system-deps` (Debian package `postgresql`)"
)


class PostgresUnavailable(RuntimeError):
    """This machine cannot run a throwaway cluster (binaries, user or runuser missing)."""


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``pg_ctl``."""
    candidates = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bindir = Path(initdb).parent
        if (bindir / "pg_ctl").exists():
            version = bindir.parent.name
            candidates.append((int(version) if version.isdigit() else 0, bindir))
    return max(candidates)[1] if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _runas_prefix() -> list[str]:
    """``runuser -u postgres --`` when root (initdb/pg_ctl refuse root); nothing otherwise."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root but `runuser` is missing (util-linux)")
    try:
        pwd.getpwnam(POSTGRES_USER)
    except KeyError as exc:
        raise PostgresUnavailable(
            f"running as root but there is no `{POSTGRES_USER}` user to run PostgreSQL as; "
            "run `make system-deps`"
        ) from exc
    return ["runuser", "-u", POSTGRES_USER, "--"]


class PostgresServer:
    """One throwaway cluster: ``url()``, ``create_database()``, ``stop()``, ``start()``, ``pid``."""

    def __init__(self, root: Path | None = None, *, bindir: Path | None = None) -> None:
        """Create (but do not start) a cluster in ``root`` (a new temporary folder by default)."""
        found = bindir or find_bindir()
        if found is None:
            raise PostgresUnavailable(SKIP_REASON)
        self.bindir = found
        self._prefix = _runas_prefix()
        # A short path: the unix socket path must stay under ~107 bytes.
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="clot-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_file = self.root / "postgres.log"
        self.port = _free_port()
        self.host = "127.0.0.1"
        self.user = POSTGRES_USER
        self._initialised = False

    # ----- lifecycle ----------------------------------------------------------------
    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [*self._prefix, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(args[:2])}` exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}\n{self.log_tail()}"
            )
        return proc

    def _chown(self) -> None:
        if self._prefix:  # root: hand the folder to the postgres user
            entry = pwd.getpwnam(POSTGRES_USER)
            for path in [self.root, *self.root.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def init(self) -> None:
        """``initdb`` the data directory and write the server settings into it."""
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._chown()
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            POSTGRES_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        )
        # Settings live in the data directory so stop()/start() keep them. fsync and friends off:
        # a crash loses a throwaway cluster, and tests run several times faster.
        settings = (
            "\n# clot-hpo throwaway cluster\n"
            f"listen_addresses = '{self.host}'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.socket_dir}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "max_connections = 200\n"
        )
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as fh:
            fh.write(settings)
        self._initialised = True

    def start(self, *, timeout: float = 60) -> None:
        """Start the cluster (``initdb`` first when new) and wait until it accepts connections."""
        if not self._initialised:
            self.init()
        if self.log_file.exists() and self._prefix:
            self._chown()
        self._run(
            str(self.bindir / "pg_ctl"),
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(int(timeout)),
            timeout=timeout + 10,
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1):
                return
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not listen on {self.host}:{self.port}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (``fast``: disconnect clients cleanly; ``immediate``: like a crash)."""
        if not self.is_running():
            return
        self._run(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode, "-w")

    def is_running(self) -> bool:
        """Whether the postmaster of this data directory is alive."""
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by the postgres user
            return True
        return True

    @property
    def pid(self) -> int | None:
        """The postmaster's process id, or None when it is not running."""
        pidfile = self.data_dir / "postmaster.pid"
        try:
            first = pidfile.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError):
            return None
        return int(first) if first.strip().isdigit() else None

    def cleanup(self) -> None:
        """Stop immediately (it is throwaway) and delete the folder."""
        with contextlib.suppress(Exception):
            self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, n: int = 20) -> str:
        """The last lines of the server log (for error messages)."""
        try:
            lines = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "server log:\n" + "\n".join(lines[-n:])

    # ----- databases --------------------------------------------------------------
    def url(self, dbname: str = "postgres", *, driver: str = "postgresql+psycopg2") -> str:
        """A SQLAlchemy URL for ``dbname`` (``driver="postgresql"`` for libpq-style URLs)."""
        return f"{driver}://{self.user}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres"):  # noqa: ANN201 - psycopg2 connection
        """A psycopg2 connection in autocommit mode."""
        import psycopg2

        conn = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, dbname=dbname, connect_timeout=5
        )
        conn.autocommit = True
        return conn

    def create_database(self, name: str) -> str:
        """Create database ``name`` (idempotent) and return its SQLAlchemy URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database names must be letters, digits and `_`, but got {name!r}")
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throwaway cluster; stop it and remove its folder on exit (or at interpreter exit)."""
    server = PostgresServer()
    atexit.register(server.cleanup)  # a benchmark interrupted by Ctrl-C leaves nothing behind
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
        atexit.unregister(server.cleanup)


def postgres_or_skip() -> Iterator[PostgresServer]:
    """Generator body of a pytest fixture: the cluster, or a skip naming ``make system-deps``."""
    import pytest

    try:
        manager = postgres_server()
        server = manager.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        manager.__exit__(None, None, None)


def _postgres_session() -> Iterator[PostgresServer]:
    yield from postgres_or_skip()


try:  # the fixture, for test modules that import it; the module also works without pytest
    import pytest as _pytest

    postgres_session = _pytest.fixture(scope="session", name="postgres_session")(_postgres_session)
except ImportError:  # pragma: no cover
    pass
