"""Issue 20, item 3: what the page refuses before it decodes anything.

Formats training does not read (415), work in flight past its bounds (503 with
``Retry-After``), a forged ``Host`` (400) and a cross-site POST (403). The app is served by
uvicorn with a stand-in for the model service: none of these answers reaches the model or
TensorFlow.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from PIL import Image

from clot_hpo.serve.app import Admission, Limits, Rejected, create_app, host_name
from clot_hpo.serve.images import DECODE_BYTES_PER_PIXEL, ImageRejected, read_upload_header
from clot_hpo.serve.service import ModelInfo
from tests.support.champion import running_app


class _StandIn:
    """What create_app uses of a ModelService, without a model: any scoring fails the test."""

    model_card = None
    threshold = 0.5

    def __init__(self) -> None:
        self.info = ModelInfo(
            uri="models:/m@champion",
            name="m",
            version="1",
            alias="champion",
            run_id="r",
            backbone="tiny_cnn",
            image_size=32,
            threshold=0.5,
            test_auc=None,
            test_auc_ci_low=None,
            test_auc_ci_high=None,
            trial=None,
            has_model_card=False,
        )

    def score(self, *args: Any) -> Any:
        raise AssertionError("a refused request reached the model")

    explain = score


def _encoded(fmt: str, **save: Any) -> bytes:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (64, 64), (40 * i, 0, 0)) for i in range(3)]
    frames[0].save(buffer, format=fmt, **save)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    limits = Limits(max_concurrent_uploads=1, max_buffered_bytes=200_000, trusted_hosts=("clots.lan",))
    with running_app(create_app(_StandIn(), limits)) as url:  # type: ignore[arg-type]
        yield url


def _post(url: str, name: str, data: bytes, **kwargs: Any) -> requests.Response:
    return requests.post(
        url, files=[("file", (name, data, "application/octet-stream"))], timeout=10, **kwargs
    )


@pytest.mark.parametrize(
    ("fmt", "save"),
    [
        ("GIF", {"save_all": True, "append_images": [Image.new("RGB", (64, 64))] * 299}),
        ("TIFF", {}),
        ("BMP", {}),
        ("WEBP", {}),
    ],
)
def test_formats_training_does_not_read_are_415_naming_the_format(
    fmt: str, save: dict[str, Any], base: str
) -> None:
    response = _post(f"{base}/api/predict", f"scan.{fmt.lower()}", _encoded(fmt, **save))
    assert response.status_code == 415, response.text
    assert response.json()["detail"] == (
        f"scan.{fmt.lower()}: a {fmt} image is not accepted: the page reads PNG, JPEG and DICOM, the "
        "formats training reads (convert it)"
    )


def test_a_16_bit_tiff_is_refused_not_scored_as_white() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32), 4000, dtype=np.uint16)).save(buffer, format="TIFF")
    with pytest.raises(ImageRejected) as refused:
        read_upload_header(buffer.getvalue(), "ct.tif")
    assert refused.value.status == 415


def test_the_decode_budget_counts_what_the_decoder_really_takes() -> None:
    png8 = _encoded("PNG")
    assert read_upload_header(png8, "a.png").decode_bytes == 64 * 64 * DECODE_BYTES_PER_PIXEL
    # A 16-bit RGB PNG is decoded to 16-bit samples before its 8-bit copy: 6 bytes more a pixel.
    # (Pillow writes only 16-bit grey, so the colour type of its IHDR is patched: the
    # header check does not decode.)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), dtype=np.uint16)).save(buffer, format="PNG")
    grey16 = buffer.getvalue()
    assert read_upload_header(grey16, "g.png").decode_bytes == 64 * 64 * (DECODE_BYTES_PER_PIXEL + 2)
    assert grey16[24] == 16 and grey16[25] == 0


def test_a_forged_host_is_400_and_a_cross_site_post_is_403(base: str) -> None:
    port = urlsplit(base).port
    # DNS rebinding: a name the attacker controls, resolving to 127.0.0.1.
    response = requests.get(f"{base}/api/model", headers={"Host": f"rebind.example:{port}"}, timeout=10)
    assert response.status_code == 400
    assert "the Host header must name this page" in response.json()["detail"]
    assert "'rebind.example:" in response.json()["detail"]
    assert response.headers["x-content-type-options"] == "nosniff"
    for name in (f"localhost:{port}", f"clots.lan:{port}", f"[::1]:{port}"):
        assert requests.get(f"{base}/healthz", headers={"Host": name}, timeout=10).status_code == 200, name
    png = _encoded("PNG")
    for origin in ("http://evil.example", "null", f"http://localhost:{port}"):
        response = _post(f"{base}/api/predict", "a.png", png, headers={"Origin": origin})
        assert response.status_code == 403, origin
        assert response.json()["detail"] == (
            f"a POST must come from this page (127.0.0.1:{port}), but its Origin is {origin!r}"
        )
    response = _post(f"{base}/api/predict", "a.png", png, headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403
    # The page's own origin passes the check (and then meets the format check).
    response = _post(f"{base}/api/predict", "a.gif", _encoded("GIF"), headers={"Origin": base})
    assert response.status_code == 415


def test_host_names_are_compared_without_port_or_brackets() -> None:
    assert [host_name(h) for h in ("LOCALHOST:80", "[::1]:8080", "::1", "10.0.0.5")] == [
        "localhost",
        "::1",
        "::1",
        "10.0.0.5",
    ]


def test_past_the_buffered_bytes_a_request_is_503_with_retry_after_before_its_body(base: str) -> None:
    body = b"--b\r\n" + b"x" * 300_000  # declares more than the 200,000 bytes all requests may hold
    response = requests.post(
        f"{base}/api/predict",
        data=body,
        headers={"content-type": "multipart/form-data; boundary=b"},
        timeout=10,
    )
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert response.json()["detail"] == (
        "the page is busy (requests in flight hold 0 bytes and this one needs 300,005 more; the most is "
        "200,000); retry in 2 s"
    )


def test_past_the_concurrent_uploads_a_request_is_503_and_the_slot_comes_back(base: str) -> None:
    host, port = urlsplit(base).hostname, urlsplit(base).port
    assert host and port
    slow = socket.create_connection((host, port), timeout=10)
    try:  # a client that sends its headers and part of its body, then stalls
        slow.sendall(
            f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n\r\n--b\r\n".encode()
        )
        deadline = time.monotonic() + 10
        while True:  # until the server reads the stalled body (a free slot answers a GIF 415)
            response = _post(f"{base}/api/predict", "a.gif", _encoded("GIF"))
            if response.status_code == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        assert "1 uploads are being received, the most at once" in response.json()["detail"]
    finally:
        slow.close()
    deadline = time.monotonic() + 10
    while True:  # the stalled body ends with its connection: the slot is free again
        response = _post(f"{base}/api/predict", "a.gif", _encoded("GIF"))
        if response.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert response.status_code == 415


def test_admission_gives_back_what_it_took() -> None:
    admission = Admission(Limits(max_concurrent_uploads=2, max_buffered_bytes=100))
    with admission.reading_slot(), admission.reading_slot():
        with pytest.raises(Rejected) as busy, admission.reading_slot():
            pass
        assert busy.value.status == 503 and busy.value.headers == {"Retry-After": "2"}
    assert admission.reading == 0
    admission.reserve(60)
    with pytest.raises(Rejected):
        admission.reserve(41)
    admission.release(60)
    admission.reserve(100)
    assert admission.held == 100 == admission.peak_held


def test_the_default_request_limit_is_lower_than_every_file_at_its_limit() -> None:
    limits = Limits()
    assert limits.max_body_bytes == 32 * 2**20 < limits.max_files * limits.max_file_bytes
