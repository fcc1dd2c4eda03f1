"""The docker-compose stack, checked without running containers (Docker cannot run here).

The compose file is parsed with PyYAML and its variables are interpolated with `.env.example`
the way Compose does, then the security and wiring rules of docs/scale-out.md are asserted:
named volumes, no published database port, the UI on 127.0.0.1 only, workers that run a
`clot-hpo search` command our own CLI accepts, a `gpu` profile reserving NVIDIA devices.
The database init script runs against a throwaway PostgreSQL cluster, and `docker compose
config` validates the file where a Docker CLI with the compose plugin exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from clot_hpo.config import ExperimentConfig
from tests.support.postgres import PostgresServer, postgres_session  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
REMOTE_OVERLAY = ROOT / "docker" / "compose.remote-workers.yml"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; `$$` is a literal `$`.
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines of a Compose env file (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: `KEY=value` expected, but got {line!r}"
        env[key.strip()] = value.strip()
    return env


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose-style variable interpolation of every string in a parsed compose document."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def repl(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op is None:
            if current is None:
                raise KeyError(f"${{{name}}} is not set in the env file")
            return current
        if op.endswith("?"):
            if unset:
                raise KeyError(f"${{{name}}} is required: {arg}")
            return current  # type: ignore[return-value]
        return arg if unset else current  # type: ignore[return-value]

    return _VAR.sub(repl, value.replace("$$", "\0")).replace("\0", "$")


def variables_used(text: str) -> dict[str, bool]:
    """Each variable the compose text uses, mapped to whether it has a default."""
    found: dict[str, bool] = {}
    for match in _VAR.finditer(text.replace("$$", "")):
        has_default = bool(match["op"]) and match["op"].endswith("-")
        found[match["name"]] = found.get(match["name"], True) and has_default
    return found


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def stack(raw: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    return interpolate(raw, env)


def _published_ports(service: dict[str, Any]) -> list[dict[str, str]]:
    """`ports:` entries as {host_ip, published, target}, short or long syntax."""
    out = []
    for entry in service.get("ports", []) or []:
        if isinstance(entry, dict):
            out.append(
                {
                    "host_ip": str(entry.get("host_ip", "")),
                    "published": str(entry.get("published", "")),
                    "target": str(entry.get("target", "")),
                }
            )
            continue
        parts = str(entry).split(":")
        if len(parts) == 3:
            out.append({"host_ip": parts[0], "published": parts[1], "target": parts[2]})
        elif len(parts) == 2:
            out.append({"host_ip": "", "published": parts[0], "target": parts[1]})
        else:
            out.append({"host_ip": "", "published": "", "target": parts[0]})
    return out


def _seconds(duration: Any) -> float:
    """A compose duration (``40s``, ``1m30s``, or seconds) in seconds."""
    total, units = 0.0, {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    for number, unit in re.findall(r"([0-9.]+)(ms|h|m|s)?", str(duration)):
        total += float(number) * units[unit or "s"]
    return total


def _volume_sources(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume entry, short or long syntax."""
    out = []
    for entry in service.get("volumes", []) or []:
        if isinstance(entry, dict):
            out.append(
                (str(entry.get("source", "")), str(entry["target"]), bool(entry.get("read_only", False)))
            )
        else:
            parts = str(entry).split(":")
            mode = parts[2] if len(parts) > 2 else "rw"
            out.append((parts[0], parts[1], "ro" in mode.split(",")))
    return out


# ----- structure ----------------------------------------------------------------------------
def test_services_and_named_volumes(stack: dict[str, Any]) -> None:
    services = stack["services"]
    assert {"postgres", "mlflow", "worker", "worker-gpu"} <= set(services)
    named = set(stack.get("volumes") or {})
    assert {"postgres-data", "mlflow-artifacts"} <= named
    pg_volumes = {t: s for s, t, _ in _volume_sources(services["postgres"])}
    assert pg_volumes["/var/lib/postgresql/data"] in named, "PostgreSQL data must be on a named volume"
    ml_volumes = {t: s for s, t, _ in _volume_sources(services["mlflow"])}
    command = services["mlflow"]["command"]
    destination = command[command.index("--artifacts-destination") + 1]
    assert ml_volumes[destination] in named, "served artifacts must be on a named volume"


def test_nothing_listens_on_a_public_interface(stack: dict[str, Any]) -> None:
    services = stack["services"]
    assert not services["postgres"].get("ports"), "the database port must not be published"
    for name, service in services.items():
        assert service.get("network_mode") != "host", f"{name} must not use the host network"
        for port in _published_ports(service):
            assert port["host_ip"] == "127.0.0.1", (
                f"{name} publishes {port} on {port['host_ip'] or 'every interface'}; "
                "only 127.0.0.1 is allowed"
            )
    mlflow_ports = _published_ports(services["mlflow"])
    assert [p["target"] for p in mlflow_ports] == ["5000"]


def test_mlflow_is_a_real_server_on_postgres(stack: dict[str, Any]) -> None:
    mlflow = stack["services"]["mlflow"]
    command = [str(c) for c in mlflow["command"]]
    assert command[0] == "server"
    backend = command[command.index("--backend-store-uri") + 1]
    assert backend.startswith("postgresql+psycopg2://") and "@postgres:5432/" in backend
    assert "--serve-artifacts" in command
    assert command[command.index("--host") + 1] == "0.0.0.0"  # the stack network only
    assert command[command.index("--workers") + 1] == "1"
    allowed = command[command.index("--allowed-hosts") + 1].split(",")
    assert "mlflow:5000" in allowed, "workers call http://mlflow:5000; its Host header must pass"
    environment = mlflow["environment"]
    assert str(environment["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]).lower() == "false"
    assert str(environment["MLFLOW_DISABLE_TELEMETRY"]).lower() == "true"
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in mlflow and "healthcheck" in stack["services"]["postgres"]


def test_worker_command_is_a_search_our_cli_accepts(
    raw: dict[str, Any], stack: dict[str, Any], env: dict[str, str]
) -> None:
    from clot_hpo.cli import build_parser

    raw_command = " ".join(str(c) for c in raw["services"]["worker"]["command"])
    for var in ("STUDY_CONFIG", "STUDY_NAME"):
        assert f"${{{var}" in raw_command, f"the worker command must take {var} from the environment"
    assert "OPTUNA_DB_PASSWORD" not in raw_command, "the database password must not be on the command line"

    worker = stack["services"]["worker"]
    command = [str(c) for c in worker["command"]]
    args = build_parser().parse_args(command)
    assert args.command == "search"
    assert args.config == env["STUDY_CONFIG"]
    assert (ROOT / args.config).is_file(), f"STUDY_CONFIG in .env.example names a missing {args.config}"
    from clot_hpo.config import load_config

    resolved = load_config(
        ROOT / args.config,
        {
            "search.study_name": args.study_name,
            "search.storage": args.storage,
            "tracking.uri": args.tracking_uri,
            "data.path": args.data,
        },
    )
    assert resolved.study_name == env["STUDY_NAME"]
    assert args.study_name == env["STUDY_NAME"]
    # No password on the command line (`ps` shows it to every user): libpq reads PGPASSWORD.
    assert args.storage == f"postgresql+psycopg2://{env['OPTUNA_DB']}@postgres:5432/{env['OPTUNA_DB']}"
    assert worker["environment"]["PGPASSWORD"] == env["OPTUNA_DB_PASSWORD"]
    assert args.tracking_uri == "http://mlflow:5000"
    # The dataset is mounted read-only where --data points.
    mounts = {t: ro for _, t, ro in _volume_sources(worker)}
    assert mounts[args.data] is True, "the data folder must be mounted read-only"
    for dep in ("postgres", "mlflow"):
        assert worker["depends_on"][dep]["condition"] == "service_healthy"
    assert "build" in worker and "profiles" not in worker, "`--scale worker=N` needs no profile"
    assert "container_name" not in worker, "a fixed container name would block --scale"
    # Stopping a worker is a preemption (SIGTERM, handled: not Python as PID 1, which ignores
    # it), with time for the trial's grace and the checkpoint's upload.
    assert worker["stop_signal"] == "SIGTERM" and worker["init"] is True
    grace = ExperimentConfig().search.preemption_grace_s
    assert _seconds(worker["stop_grace_period"]) >= grace + 10, worker["stop_grace_period"]


def test_gpu_profile_reserves_nvidia_devices(stack: dict[str, Any]) -> None:
    services = stack["services"]
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert gpu["command"] == services["worker"]["command"], "GPU workers join the same study"
    assert "tensorflow[and-cuda]" in gpu["build"]["args"]["TENSORFLOW_PACKAGE"]
    for name, service in services.items():
        if name != "worker-gpu":
            assert "deploy" not in service or "devices" not in str(service["deploy"]), name


def test_remote_worker_overlay_binds_one_private_address(env: dict[str, str]) -> None:
    overlay = yaml.safe_load(REMOTE_OVERLAY.read_text(encoding="utf-8"))
    defaults = {k: v for k, v in env.items() if k != "REMOTE_BIND_ADDRESS"}
    for bind, expected in ((None, "127.0.0.1"), ("10.8.0.1", "10.8.0.1")):
        values = dict(defaults) if bind is None else {**defaults, "REMOTE_BIND_ADDRESS": bind}
        resolved = interpolate(overlay, values)
        ports = _published_ports(resolved["services"]["postgres"])
        assert [p["host_ip"] for p in ports] == [expected]
        assert [p["target"] for p in ports] == ["5432"]
        assert {p["host_ip"] for p in _published_ports(resolved["services"]["mlflow"])} == {expected}
    assert env["REMOTE_BIND_ADDRESS"] == "127.0.0.1", ".env.example must default to loopback"


# ----- secrets ------------------------------------------------------------------------------
def test_every_required_variable_is_in_env_example(env: dict[str, str]) -> None:
    used = variables_used(COMPOSE.read_text(encoding="utf-8"))
    missing = sorted(name for name, has_default in used.items() if not has_default and name not in env)
    assert not missing, f".env.example must define {missing}"
    for key in (
        "POSTGRES_PASSWORD",
        "OPTUNA_DB_PASSWORD",
        "MLFLOW_DB_PASSWORD",
        "MLFLOW_ADMIN_PASSWORD",
        "MLFLOW_WORKER_PASSWORD",
        "MLFLOW_SECRET_KEY",
    ):
        assert env[key].startswith("change-me"), f"{key} in .env.example must be a placeholder"


# ----- the shared server's logins (issue 12, item 3) ------------------------------------------
SECRET_KEYS = (
    "POSTGRES_PASSWORD",
    "OPTUNA_DB_PASSWORD",
    "MLFLOW_DB_PASSWORD",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_WORKER_PASSWORD",
    "MLFLOW_SECRET_KEY",
)


def test_the_server_requires_logins_and_no_secret_is_on_a_command_line(
    raw: dict[str, Any], stack: dict[str, Any], env: dict[str, str]
) -> None:
    services = stack["services"]
    mlflow = services["mlflow"]
    command = [str(c) for c in mlflow["command"]]
    assert command[command.index("--app-name") + 1] == "basic-auth", "the shared server needs logins"
    environment = mlflow["environment"]
    assert environment["MLFLOW_AUTH_ADMIN_PASSWORD"] == env["MLFLOW_ADMIN_PASSWORD"]
    assert environment["PGPASSWORD"] == env["MLFLOW_DB_PASSWORD"]
    assert environment["MLFLOW_FLASK_SERVER_SECRET_KEY"] == env["MLFLOW_SECRET_KEY"]
    # Required: an unset admin password stops `docker compose up` (`${VAR:?...}`).
    raw_text = COMPOSE.read_text(encoding="utf-8")
    for key in ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_WORKER_PASSWORD", "MLFLOW_SECRET_KEY", "MLFLOW_DB_PASSWORD"):
        assert f"${{{key}:?" in raw_text, f"{key} must be required"
    # Workers authenticate through MLflow's own environment variables.
    for name in ("worker", "worker-gpu"):
        worker_env = services[name]["environment"]
        assert worker_env["MLFLOW_TRACKING_USERNAME"] == env["MLFLOW_WORKER_USER"]
        assert worker_env["MLFLOW_TRACKING_PASSWORD"] == env["MLFLOW_WORKER_PASSWORD"]
        assert services[name]["depends_on"]["mlflow-users"]["condition"] == "service_completed_successfully"
    users = services["mlflow-users"]
    assert users["environment"]["MLFLOW_TRACKING_USERNAME"] == env["MLFLOW_ADMIN_USER"]
    # The workers' login, then the promotion lock model, made by the admin before anyone else can.
    assert users["command"] == ["ensure"]
    assert users["environment"]["MLFLOW_MODEL_NAME"] == "blood-clot-detector"
    # No secret on any command line or entrypoint, in any service.
    secrets = {env[key] for key in SECRET_KEYS}
    for name, service in services.items():
        argv = " ".join(str(c) for c in (service.get("command") or []) + (service.get("entrypoint") or []))
        leaked = sorted(s for s in secrets if s in argv)
        assert not leaked, f"{name}'s command line carries {leaked}: `ps` shows it to every user"
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", argv), f"{name}: a URL with a password: {argv}"
    # The image runs the entrypoint that refuses placeholders.
    server = (ROOT / "docker" / "mlflow.Dockerfile").read_text(encoding="utf-8")
    assert "mlflow-entrypoint.sh" in re.findall(r"^ENTRYPOINT (.*)$", server, re.M)[-1]
    assert "mlflow[auth]==" in server, "the basic-auth app needs Flask-WTF (mlflow[auth])"


def _run_entrypoint(tmp_path: Path, values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """docker/mlflow-entrypoint.sh with a stand-in `mlflow` that prints its arguments and config."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "mlflow"
    fake.write_text('#!/bin/sh\necho "mlflow $*"\ncat "$MLFLOW_AUTH_CONFIG_PATH"\n')
    fake.chmod(0o755)
    run_env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
        "MLFLOW_AUTH_DATABASE_URI": "postgresql+psycopg2://mlflow@postgres:5432/mlflow",
        **values,
    }
    return subprocess.run(
        ["sh", str(ROOT / "docker" / "mlflow-entrypoint.sh"), "server", "--app-name", "basic-auth"],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_server_refuses_to_start_with_placeholder_secrets(env: dict[str, str], tmp_path: Path) -> None:
    good = {
        "MLFLOW_AUTH_ADMIN_PASSWORD": "a9f3c2d1e8b7a6f5",
        "PGPASSWORD": "0c1d2e3f4a5b6c7d",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "9e8d7c6b5a4f3e2d",
    }
    started = _run_entrypoint(tmp_path, good)
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("mlflow server --app-name basic-auth")
    assert "default_permission = READ" in started.stdout and "admin_username = admin" in started.stdout
    assert not any(v in started.stdout for v in good.values()), "the auth config holds no secret"
    for key, placeholder in (
        ("MLFLOW_AUTH_ADMIN_PASSWORD", env["MLFLOW_ADMIN_PASSWORD"]),
        ("PGPASSWORD", env["MLFLOW_DB_PASSWORD"]),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", env["MLFLOW_SECRET_KEY"]),
        ("MLFLOW_AUTH_ADMIN_PASSWORD", ""),
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "short"),
    ):
        refused = _run_entrypoint(tmp_path, {**good, key: placeholder})
        assert refused.returncode == 2, (key, placeholder, refused.stdout)
        assert key in refused.stderr and "mlflow server" not in refused.stdout


def test_secrets_stay_out_of_git_and_the_image() -> None:
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
        assert ignored.returncode == 0, ".env must be ignored by git"
        example = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=ROOT, check=False)
        assert example.returncode == 1, ".env.example must not be ignored by git"
    dockerignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".env" in dockerignore and ".git" in dockerignore and "data" in dockerignore


# ----- images -------------------------------------------------------------------------------
def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line.strip())
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def test_images_are_slim_non_root_and_pinned_like_requirements() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert "requirements.txt" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0"), "the worker must not run as root"
    assert re.search(r'^ENTRYPOINT \["clot-hpo"\]', dockerfile, re.M)

    requirements = _pins(ROOT / "requirements.txt")
    server = (ROOT / "docker" / "mlflow.Dockerfile").read_text(encoding="utf-8")
    assert re.findall(r"^USER (\S+)", server, re.M)[-1] not in ("root", "0")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", server, re.M))
    assert args["MLFLOW_VERSION"] == requirements["mlflow"], "MLflow server and client must match"
    assert args["PSYCOPG2_VERSION"] == requirements["psycopg2-binary"]
    default_tf = dict(re.findall(r"^ARG (\w+)=(\S+)", dockerfile, re.M))["TENSORFLOW_PACKAGE"]
    assert default_tf == f"tensorflow-cpu=={requirements['tensorflow-cpu']}"


# ----- the database init script, for real ----------------------------------------------------
@pytest.mark.slow
def test_initdb_script_creates_both_databases(
    postgres_session: PostgresServer,  # noqa: F811
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    psql = postgres_session.bindir / "psql"
    if not psql.exists():
        psql = Path(shutil.which("psql") or "psql")
    # Distinct names: the session cluster may hold other tests' databases.
    run_env = {
        "PATH": f"{psql.parent}:/usr/bin:/bin",
        "PGHOST": postgres_session.host,
        "PGPORT": str(postgres_session.port),
        "POSTGRES_USER": postgres_session.user,
        "OPTUNA_DB": "compose_optuna",
        "OPTUNA_DB_PASSWORD": "initdb-optuna-7f3a9c",
        "MLFLOW_DB": "compose_mlflow",
        "MLFLOW_DB_PASSWORD": "initdb-mlflow-2b8e4d",
    }
    # .env.example's placeholders are refused before anything is created.
    placeholder = subprocess.run(
        ["bash", str(ROOT / "docker" / "initdb.sh")],
        env={**run_env, "OPTUNA_DB_PASSWORD": env["OPTUNA_DB_PASSWORD"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert placeholder.returncode == 2 and "OPTUNA_DB_PASSWORD" in placeholder.stderr
    proc = subprocess.run(
        ["bash", str(ROOT / "docker" / "initdb.sh")],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr

    conn = postgres_session.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT d.datname, r.rolname FROM pg_database d JOIN pg_roles r "
                "ON d.datdba = r.oid WHERE d.datname LIKE 'compose_%' ORDER BY 1"
            )
            owners = dict(cur.fetchall())
            cur.execute("SELECT rolname, rolsuper FROM pg_roles WHERE rolname LIKE 'compose_%'")
            roles = dict(cur.fetchall())
    finally:
        conn.close()
    assert owners == {"compose_mlflow": "compose_mlflow", "compose_optuna": "compose_optuna"}
    assert roles == {"compose_mlflow": False, "compose_optuna": False}, "roles must not be superusers"

    # Each role may create tables in its own database (PostgreSQL 15 locked down `public`).
    import psycopg2

    for db in ("compose_optuna", "compose_mlflow"):
        own = psycopg2.connect(
            host=postgres_session.host, port=postgres_session.port, user=db, dbname=db, connect_timeout=5
        )
        try:
            with own, own.cursor() as cur:
                cur.execute("CREATE TABLE t (x int)")
        finally:
            own.close()

    # A second run against an initialised cluster fails loudly instead of half-applying.
    again = subprocess.run(
        ["bash", str(ROOT / "docker" / "initdb.sh")],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode != 0 and "already exists" in again.stderr


# ----- docker compose config, where the CLI exists ------------------------------------------
def test_docker_compose_config_validates(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no `docker` CLI on this machine")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        reason = ((probe.stderr or probe.stdout).strip().splitlines() or ["no output"])[0]
        pytest.skip(f"`docker compose` plugin unavailable ({reason[:200]})")
    env_file = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env_file)
    proc = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "--env-file", str(env_file), "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    profiles = subprocess.run(
        [
            docker,
            "compose",
            "-f",
            str(COMPOSE),
            "--env-file",
            str(env_file),
            "--profile",
            "gpu",
            "config",
            "--services",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert profiles.returncode == 0, profiles.stderr
    assert set(profiles.stdout.split()) == {"postgres", "mlflow", "worker", "worker-gpu"}
    overlay = subprocess.run(
        [
            docker,
            "compose",
            "-f",
            str(COMPOSE),
            "-f",
            str(REMOTE_OVERLAY),
            "--env-file",
            str(env_file),
            "config",
            "--format",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert overlay.returncode == 0, overlay.stderr
    import json

    merged = json.loads(overlay.stdout)["services"]
    assert {p["host_ip"] for p in merged["postgres"]["ports"]} == {"127.0.0.1"}
    assert {p["host_ip"] for p in merged["mlflow"]["ports"]} == {"127.0.0.1"}
