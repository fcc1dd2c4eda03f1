"""Screenshot a registered model version's page in the MLflow UI (its model card summary and tags).

Usage::

    .venv/bin/python scripts/screenshot_model_card.py URI MODEL VERSION OUT.png

``URI`` is an MLflow server (``http://127.0.0.1:5000``) or a store (``sqlite:///mlruns/mlflow.db``;
a throwaway ``mlflow server`` is started on it on a free loopback port, and stopped by its
process id). The page shows what ``clot-hpo promote`` wrote on the version: the model
card's summary as its description, and the gate's decision and the model file's sha256 as
its tags. Headless Chromium is Debian's ``/usr/bin/chromium``, driven by Playwright, as in
the tests (``make system-deps`` installs it). ``VERSION`` may also be an alias (``champion``).
"""

from __future__ import annotations

import argparse
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def mlflow_ui(uri: str) -> Iterator[str]:
    """The UI's base URL: ``uri`` itself when it is a server, else a server started on the store."""
    if uri.startswith(("http://", "https://")):
        yield uri.rstrip("/")
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    mlflow = Path(sys.executable).with_name("mlflow")
    with tempfile.TemporaryDirectory(prefix="mlflow-ui-") as tmp:
        cmd = [str(mlflow), "server", "--backend-store-uri", uri, "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--workers", "1", "--artifacts-destination", tmp]
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not _healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"mlflow server on {uri} did not start:\n{(Path(tmp) / 'server.log').read_text()}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()


def _close_assistant(page: Any) -> None:
    """Close MLflow 3's assistant side panel when it is open (it hides a third of the page)."""
    with contextlib.suppress(Exception):
        page.get_by_role("button", name="Close", exact=True).first.click(timeout=3000)


def screenshot(uri: str, model: str, version: str, out: Path) -> Path:
    """Open the version's page in headless Chromium and save a full-page screenshot to ``out``."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing (Debian package `chromium`; `make system-deps` installs it)")
    with mlflow_ui(uri) as base:
        if not version.isdigit():  # an alias: the page needs the number
            from mlflow import MlflowClient

            version = str(
                MlflowClient(base, registry_uri=base).get_model_version_by_alias(model, version).version
            )
        url = f"{base}/#/models/{model}/versions/{version}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 1250})
                page.goto(url, wait_until="load", timeout=120_000)
                # The description holds the card's summary; the tags the gate's decision.
                page.get_by_text("Research tool, not a diagnostic device", exact=False).first.wait_for(
                    timeout=120_000
                )
                decision = page.get_by_text("promotion.decision", exact=True).first
                decision.wait_for(timeout=60_000)
                _close_assistant(page)
                # The tags table scrolls inside its own pane: bring the gate's decision into it.
                decision.scroll_into_view_if_needed(timeout=10_000)
                page.wait_for_timeout(1000)  # the last tables settle
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=True)
            finally:
                browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("uri", help="MLflow server URL or store URI (sqlite:///mlruns/mlflow.db)")
    parser.add_argument("model", help="registered model name (blood-clot-detector)")
    parser.add_argument("version", help="version number or alias (champion)")
    parser.add_argument("out", type=Path, help="PNG to write")
    args = parser.parse_args(argv)
    print(screenshot(args.uri, args.model, args.version, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
