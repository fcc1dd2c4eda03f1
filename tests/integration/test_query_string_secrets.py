"""A password in the query string of a URL is written nowhere (issue 20, item 4).

A study, ``promote``, ``report`` and ``serve`` with the PostgreSQL password in the query
string (``?password=...``) of both the Optuna storage URL and the MLflow tracking URI (a
PostgreSQL store). Afterwards the password is in no file under the study's folder, its
artifacts or report, no row of either database (every param, tag, user attribute and
description), no process's command line while the study runs (the storage URL comes from
``CLOT_HPO_STORAGE``), no output of any command and no answer of the page; and the commands
given the URL on their command line warn about it.

The throwaway PostgreSQL cluster trusts loopback connections, so the password is not checked:
what matters is that the URLs carry one, as they do in production.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import CLI, REPO, run_cli
from tests.support.mlflow_server import free_port
from tests.support.postgres import PostgresServer, postgres_session  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

SECRET = "Qs-secret-3f9a0c71e2"
STUDY = "qsecrets"
SPACE = """backbone: tiny_cnn
parameters:
  image_size: {type: categorical, choices: [32]}
  batch_size: {type: categorical, choices: [16]}
  learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""


def _command_lines() -> Iterator[str]:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                yield (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue


@pytest.fixture(scope="module")
def study(
    postgres_session: PostgresServer,  # noqa: F811
    tiny_dataset: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    conn = postgres_session.connect()
    try:
        with conn.cursor() as cur:
            for db in ("qs_optuna", "qs_mlflow"):
                cur.execute(f"DROP DATABASE IF EXISTS {db}")
            cur.execute("DROP ROLE IF EXISTS qs_role")
            cur.execute(f"CREATE ROLE qs_role LOGIN PASSWORD '{SECRET}'")
            for db in ("qs_optuna", "qs_mlflow"):
                cur.execute(f"CREATE DATABASE {db} OWNER qs_role")
    finally:
        conn.close()
    where = f"{postgres_session.host}:{postgres_session.port}"
    storage = f"postgresql+psycopg2://qs_role@{where}/qs_optuna?password={SECRET}&application_name=clot"
    tracking = f"postgresql+psycopg2://qs_role@{where}/qs_mlflow?sslmode=disable&password={SECRET}"
    work = tmp_path_factory.mktemp("qs-study")
    inputs = tmp_path_factory.mktemp("qs-inputs")  # the user's config holds the URL, by choice
    (inputs / "space.yaml").write_text(SPACE)
    config = inputs / "exp.yaml"
    # No failure gallery (on by default with a local artifact root): Grad-CAM images carry no URL,
    # and computing them cost the study seconds this test does not check.
    config.write_text(
        f"name: {STUDY}\ntraining: {{epochs: 1, weights: none}}\n"
        "search: {backbones: [tiny_cnn], search_spaces: {tiny_cnn: space.yaml}, pruner: none, n_trials: 1}\n"
        f"tracking: {{uri: '{tracking}', artifact_root: '{work / 'artifacts'}'}}\n"
        "budget: {vram_gb: 4}\nevaluation: {bootstrap_samples: 100, explanations: false}\n"
    )
    seen_in_ps: list[str] = []
    done = threading.Event()

    def watch() -> None:  # every process's command line while the study runs (`ps`)
        while not done.is_set():
            seen_in_ps.extend(line for line in _command_lines() if SECRET in line)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        search = run_cli(
            "search", str(config), "--data", str(tiny_dataset), cwd=work, env={"CLOT_HPO_STORAGE": storage}
        )
    finally:
        done.set()
        watcher.join()
    assert search.returncode == 0, search.stderr
    promote = run_cli("promote", "--config", str(config), "--storage", storage, cwd=work)
    assert promote.returncode == 0, promote.stderr
    report = run_cli(
        "report", "--experiment", STUDY, "--tracking-uri", tracking, "--out", str(work / "report"), cwd=work
    )
    assert report.returncode == 0, report.stderr
    return {
        "work": work,
        "outputs": {"search": search, "promote": promote, "report": report},
        "seen_in_ps": seen_in_ps,
        "config": config,
        "tracking": tracking,
    }


def test_the_query_string_password_is_written_nowhere(
    study: dict[str, Any],
    postgres_session: PostgresServer,  # noqa: F811
) -> None:
    assert study["seen_in_ps"] == [], "a process's command line carried the password"
    outputs = study["outputs"]
    for name, result in outputs.items():
        assert SECRET not in result.stdout + result.stderr, name
    assert "--storage carries a password" in outputs["promote"].stderr
    files = [p for p in study["work"].rglob("*") if p.is_file()]
    kinds = {p.name for p in files}
    assert {"config.resolved.yaml", "report.html", "test_predictions.csv"} <= kinds, sorted(kinds)[:40]
    assert any(p.name.startswith("task.") for p in files)
    for file in files:
        assert SECRET.encode() not in file.read_bytes(), f"{file} holds the password"
    # Every row of both databases: MLflow's params, tags, descriptions, inputs, registered
    # versions; Optuna's user and system attributes.
    rows = 0
    for db in ("qs_optuna", "qs_mlflow"):
        conn = postgres_session.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                for (table,) in cur.fetchall():
                    cur.execute(f'SELECT t::text FROM "{table}" t')
                    for (row,) in cur.fetchall():
                        rows += 1
                        assert SECRET not in row, f"{db}.{table}: {row[:200]}"
        finally:
            conn.close()
    assert rows > 100
    # The report names the tracking store, with the credential hidden.
    assert "qs_mlflow?sslmode=disable&password=***" in (study["work"] / "report" / "report.md").read_text()


def test_the_page_started_with_it_shows_it_nowhere(study: dict[str, Any]) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [*CLI, "serve", "--config", str(study["config"]), "--port", str(port)],
        cwd=study["work"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    answers = []
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    answers.append(resp.read().decode())
                break
            except OSError:
                assert time.monotonic() < deadline, "the page did not start"
                time.sleep(0.5)
        for path in ("/api/model", "/model-card", "/"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                    answers.append(resp.read().decode())
            except urllib.error.HTTPError as exc:  # no card: its 404 sentence is an answer too
                answers.append(exc.read().decode())
    finally:
        process.terminate()
        output = process.communicate(timeout=60)[0]
    assert '"status":"ok"' in answers[0].replace(" ", "")
    for answer in answers:
        assert SECRET not in answer
    assert SECRET not in output and "Serving models:/blood-clot-detector@champion" in output
