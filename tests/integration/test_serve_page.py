"""End to end: ``clot-hpo serve`` on a registered champion, driven by headless Chromium.

The real command starts on a free loopback port with a champion built the product's way
(tiny CNN, SQLite store). Chromium opens the page, reads the model's line, uploads a
synthetic positive through the file input and waits for the probability, the decision at
the model's threshold and the Grad-CAM overlay (decoded by the browser); then a text file,
whose error names it, and a negative. A screenshot is kept (``CLOT_HPO_SCREENSHOT=path`` writes the one
for the docs). Uses Debian's ``/usr/bin/chromium`` as the MLflow UI test does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.champion import Champion, register_tiny_champion
from tests.support.cli import REPO
from tests.support.mlflow_server import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing (Debian package `chromium`; `make system-deps` installs it)",
    ),
]


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Champion:
    return register_tiny_champion(tmp_path_factory.mktemp("page-champion"))


@pytest.fixture(scope="module")
def page_url(champion: Champion, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``clot-hpo serve`` as a user starts it; stopped by its process id."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clot_hpo.cli",
                "serve",
                "--tracking-uri",
                champion.tracking_uri,
                "--model",
                champion.model_uri,
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"clot-hpo serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"clot-hpo serve not healthy after 180 s:\n{log.read_text()}")
            time.sleep(0.5)
        assert f"Open {url}/" in log.read_text()
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # its own session: pgid == pid
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)


def test_the_page_scores_and_explains_an_uploaded_positive(
    page_url: str, champion: Champion, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    screenshot = Path(os.environ.get("CLOT_HPO_SCREENSHOT") or tmp_path / "serve-page.png")
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not an image")
    requests_seen: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("request", lambda request: requests_seen.append(request.url))
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_url, wait_until="networkidle", timeout=60_000)

            expect(page.locator("#disclaimer")).to_contain_text("Research tool, not a diagnostic device")
            model = page.locator("#model")
            expect(model).to_contain_text("blood-clot-detector, version 1 (@champion)")
            expect(model).to_contain_text("tiny_cnn, input 32 × 32 px")
            # The catalogue's headline metric, its value and interval at the run's confidence_level
            # (serve.service.page_metrics).
            auc_row = re.compile(r"Test AUC\s*[01]\.\d{3} \(90% interval [01]\.\d{3} to ")
            expect(model).to_contain_text(auc_row)
            expect(model.get_by_role("link", name="open")).to_have_attribute("href", "/model-card")

            page.set_input_files("#files", str(champion.positive))
            result = page.locator("li.result").first
            expect(result).to_have_attribute("data-state", "done", timeout=60_000)
            expect(result.locator(".name")).to_have_text(champion.positive.name)
            expect(result.locator(".decision")).to_have_text("Clot")
            expect(result.locator(".probability")).to_contain_text("at threshold 0.500")
            probability = float(result.locator(".probability").inner_text().split()[1])
            assert 0.5 <= probability <= 1.0
            expect(result.locator(".timing")).to_contain_text("ms on the server")
            overlay = result.get_by_role("img", name=f"Grad-CAM overlay of {champion.positive.name}")
            # Decoded by the browser at the size the server drew it.
            size = overlay.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
            assert size == [True, 256, 256], size

            page.set_input_files("#files", str(not_an_image))
            failed = page.locator("li.result").first
            expect(failed).to_have_attribute("data-state", "error", timeout=30_000)
            expect(failed).to_contain_text("400: notes.txt: not an image file that can be decoded")

            page.set_input_files("#files", str(champion.negative))
            negative = page.locator("li.result").first
            expect(negative).to_have_attribute("data-state", "done", timeout=60_000)
            expect(negative.locator(".decision")).to_have_text("No clot")
            expect(page.locator("li.result")).to_have_count(3)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    # Everything the page loaded came from the app itself (it works offline).
    assert requests_seen and all(url.startswith(page_url) or url.startswith("blob:") for url in requests_seen)
    assert screenshot.stat().st_size > 10_000
