"""The page's API against a real champion (tiny CNN, SQLite store) served by uvicorn.

Every status the API promises is exercised: 200 for images, 400 for what is not an image
(naming the file), 413 for files, bodies and declared dimensions over the limits; the
probabilities equal ``clot-hpo predict``'s, and uploads never reach the disk.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from clot_hpo.errors import ConfigError
from clot_hpo.registry import predict_command
from clot_hpo.serve.app import Limits, create_app
from clot_hpo.serve.service import ModelService, load_service
from tests.support.champion import MODEL_CARD, Champion, register_tiny_champion, running_app


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Champion:
    return register_tiny_champion(tmp_path_factory.mktemp("serve-champion"))


@pytest.fixture(scope="module")
def service(champion: Champion) -> ModelService:
    return load_service(champion.tracking_uri, champion.model_uri)


@pytest.fixture(scope="module")
def base(service: ModelService) -> Iterator[str]:
    with running_app(create_app(service)) as url:
        yield url


@pytest.fixture(scope="module")
def strict(service: ModelService) -> Iterator[str]:
    """The same model behind small limits: 4 KB files, 2 files per request, 64 x 64 pixels."""
    with running_app(
        create_app(service, Limits(max_file_bytes=4096, max_files=2, max_pixels=64 * 64))
    ) as url:
        yield url


def _files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (name, data, "application/octet-stream")) for name, data in items]


def _png(size: tuple[int, int], seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def _flat_png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def _declared_png(width: int, height: int) -> bytes:
    """A PNG whose valid header declares ``width x height`` and whose pixel data is garbage."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"garbage") + chunk(b"IEND", b"")


def _predict_cli(
    champion: Champion, paths: list[Path], capsys: pytest.CaptureFixture[str]
) -> dict[str, float]:
    args = argparse.Namespace(
        tracking_uri=champion.tracking_uri, model=champion.model_uri, paths=[str(p) for p in paths]
    )
    predict_command(args)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return {Path(line["image"]).name: line["probability"] for line in lines}


def test_health_model_metadata_and_model_card(base: str, champion: Champion) -> None:
    assert requests.get(f"{base}/healthz", timeout=10).json()["status"] == "ok"
    info = requests.get(f"{base}/api/model", timeout=10).json()
    assert (info["name"], info["version"], info["alias"]) == ("blood-clot-detector", "1", "champion")
    assert (info["backbone"], info["image_size"], info["threshold"]) == ("tiny_cnn", 32, 0.5)
    assert info["test_auc"] == pytest.approx(champion.test_auc)
    assert info["test_auc_ci_low"] <= info["test_auc"] <= info["test_auc_ci_high"]
    # What the page lists: the catalogue's headline metrics, the same numbers.
    [auc] = info["metrics"]
    assert auc["label"] == "Test AUC" and auc["value"] == info["test_auc"]
    assert (auc["ci_low"], auc["ci_high"]) == (info["test_auc_ci_low"], info["test_auc_ci_high"])
    assert auc["ci_level"] == 0.9  # the run's confidence_level param
    assert info["dicom"] is None  # logged without DICOM settings: the defaults apply
    assert info["model_card_url"] == "/model-card" and info["trial"] == "0"
    card = requests.get(f"{base}{info['model_card_url']}", timeout=10)
    # Shown as text, never as HTML: markup in a card cannot run in the page's origin.
    assert card.headers["content-type"].startswith("text/plain")
    # Where the data lay on the training machine is nobody's business on the network.
    assert card.text == MODEL_CARD.replace("/home/ana/scans/clots", ".../clots")


def test_the_page_and_its_assets_are_served_by_the_app_itself(base: str) -> None:
    page = requests.get(base, timeout=10)
    assert page.status_code == 200 and "Research tool, not a diagnostic device" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset in ("/static/app.js", "/static/style.css"):
        response = requests.get(f"{base}{asset}", timeout=10)
        assert response.status_code == 200
        assert "http://" not in response.text and "https://" not in response.text  # no CDN: works offline
    assert "https://" not in page.text and "http://" not in page.text
    assert requests.get(f"{base}/static/../app.py", timeout=10).status_code == 404
    assert requests.get(f"{base}/docs", timeout=10).status_code == 404  # FastAPI's docs load a CDN


def test_predict_returns_one_object_per_image_equal_to_the_predict_command(
    base: str, champion: Champion, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [champion.positive, champion.negative]
    response = requests.post(
        f"{base}/api/predict", files=_files(*((p.name, p.read_bytes()) for p in paths)), timeout=30
    )
    assert response.status_code == 200, response.text
    results = response.json()
    assert [r["filename"] for r in results] == [p.name for p in paths]
    expected = _predict_cli(champion, paths, capsys)
    for result in results:
        assert set(result) >= {"filename", "probability", "label", "threshold", "model", "ms"}
        assert result["probability"] == pytest.approx(expected[result["filename"]], abs=1e-5)
        assert result["label"] == int(result["probability"] >= 0.5) and result["threshold"] == 0.5
        assert result["decision"] == ("clot" if result["label"] else "no clot")
        assert result["model"] == {"name": "blood-clot-detector", "version": "1", "uri": champion.model_uri}
        assert 0 < result["ms"] < 5000
    assert results[0]["label"] == 1 and results[1]["label"] == 0  # the trained model separates the two


def test_explain_returns_a_png_overlay(base: str, champion: Champion) -> None:
    data = champion.positive.read_bytes()
    response = requests.post(f"{base}/api/explain", files=_files(("pos.png", data)), timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(response.content))
    assert overlay.size == (256, 256) and overlay.mode == "RGB"  # 32 px shown at 256 px
    probability = float(response.headers["x-probability"])
    predicted = requests.post(f"{base}/api/predict", files=_files(("pos.png", data)), timeout=30).json()[0]
    assert probability == pytest.approx(predicted["probability"], abs=1e-5)


def test_not_an_image_is_400_naming_the_file(base: str) -> None:
    response = requests.post(
        f"{base}/api/predict", files=_files(("notes.txt", b"not an image at all")), timeout=10
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("notes.txt: not an image file that can be decoded")
    response = requests.post(f"{base}/api/explain", files=_files(("empty.png", b"")), timeout=10)
    assert response.status_code == 400 and response.json()["detail"] == "empty.png: the file is empty"
    # A valid header over a broken body: decoding fails, and says which file.
    response = requests.post(
        f"{base}/api/predict", files=_files(("broken.png", _declared_png(40, 40))), timeout=10
    )
    assert response.status_code == 400 and response.json()["detail"].startswith("broken.png: not an image")


def test_request_shape_errors_are_400(base: str) -> None:
    response = requests.post(f"{base}/api/predict", data={"other": "x"}, files=_files(), timeout=10)
    assert response.status_code == 400
    response = requests.post(
        f"{base}/api/predict", data=b"{}", headers={"content-type": "application/json"}, timeout=10
    )
    assert response.status_code == 400 and "multipart/form-data" in response.json()["detail"]
    response = requests.post(f"{base}/api/predict", files={"other": ("a.png", _png((8, 8)))}, timeout=10)
    assert response.status_code == 400 and "field 'file'" in response.json()["detail"]


def test_declared_dimensions_over_the_pixel_limit_are_413_before_decoding(base: str, strict: str) -> None:
    # 8000 x 8000 declared, garbage pixel data: 413 (not 400) shows the header was checked first.
    response = requests.post(
        f"{base}/api/predict", files=_files(("bomb.png", _declared_png(8000, 8000))), timeout=10
    )
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "bomb.png: images may have at most 50,000,000 pixels, but this one declares 8000 x 8000 = 64,000,000"
    )
    # Past Pillow's own bomb limit too.
    response = requests.post(
        f"{base}/api/explain", files=_files(("huge.png", _declared_png(30000, 30000))), timeout=10
    )
    assert response.status_code == 413 and response.json()["detail"].startswith(
        "huge.png: images may have at most"
    )
    response = requests.post(
        f"{strict}/api/predict", files=_files(("wide.png", _flat_png((65, 64)))), timeout=10
    )
    assert response.status_code == 413 and "65 x 64 = 4,160" in response.json()["detail"]


def test_size_limits_are_413(strict: str) -> None:
    big = _png((40, 40))  # about 4.8 KB uncompressed: over the 4 KB limit
    assert len(big) > 4096
    response = requests.post(f"{strict}/api/predict", files=_files(("big.png", big)), timeout=10)
    assert response.status_code == 413
    assert response.json()["detail"] == f"big.png: a file may have at most 4,096 bytes, but has {len(big):,}"
    small = _png((8, 8))
    response = requests.post(
        f"{strict}/api/predict", files=_files(*[(f"{i}.png", small) for i in range(3)]), timeout=10
    )
    assert response.status_code in (400, 413)  # Starlette's own file count limit, or ours
    response = requests.post(
        f"{strict}/api/explain", files=_files(("a.png", small), ("b.png", small)), timeout=10
    )
    assert response.status_code in (400, 413)
    # A body declared over the limit is refused before it is read.
    body = b"x" * (2 * 4096 + 64 * 1024 + 1)
    response = requests.post(
        f"{strict}/api/predict",
        data=body,
        headers={"content-type": "multipart/form-data; boundary=b"},
        timeout=10,
    )
    assert response.status_code == 413 and "a request may carry at most" in response.json()["detail"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives (and parsed)
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(20):
            yield b"y" * 8192

    response = requests.post(
        f"{strict}/api/predict",
        data=chunked(),
        headers={"content-type": "multipart/form-data; boundary=b"},
        timeout=10,
    )
    assert response.status_code == 413


def test_uploads_never_reach_the_disk(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Starlette spools an upload over 1 MiB to a temporary file; the app's parser must not.
    def refuse(self: Any) -> None:
        raise AssertionError("an upload was rolled over to a file on disk")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", refuse)
    data = _png((700, 700))
    assert len(data) > 1024 * 1024
    response = requests.post(f"{base}/api/predict", files=_files(("large.png", data)), timeout=60)
    assert response.status_code == 200, response.text


def test_concurrent_clients_are_served_without_errors(base: str, champion: Champion) -> None:
    data = champion.positive.read_bytes()

    def one(i: int) -> tuple[int, float]:
        # Past the concurrent-upload cap the page answers 503 with Retry-After (issue 20): a
        # client honouring it gets its answer.
        for _ in range(20):
            response = requests.post(f"{base}/api/predict", files=_files((f"{i}.png", data)), timeout=60)
            if response.status_code != 503:
                break
            assert response.headers["Retry-After"].isdigit()
            time.sleep(0.2)
        return response.status_code, response.json()[0]["probability"]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(one, range(24)))
    assert {status for status, _ in results} == {200}
    assert max(p for _, p in results) - min(p for _, p in results) < 1e-6


def test_an_unresolvable_model_is_a_config_error(tmp_path: Path, champion: Champion) -> None:
    with pytest.raises(ConfigError, match="no MLflow store at .*empty.db.*does not exist"):
        load_service(f"sqlite:///{tmp_path / 'empty.db'}", "models:/blood-clot-detector@champion")
    with pytest.raises(ConfigError, match="model alias 'nope' of 'blood-clot-detector' is not set"):
        load_service(champion.tracking_uri, "models:/blood-clot-detector@nope")
