"""Issue 12: the web page shares the data layer's pixel limit and names DICOM uploads."""

from __future__ import annotations

import pytest

from clot_hpo.config import DataConfig
from clot_hpo.serve.images import (
    DECODE_BYTES_PER_PIXEL,
    DEFAULT_MAX_PIXELS,
    ImageRejected,
    decode_image_bytes,
)
from tests.unit.data.test_boundaries import dicom_bytes


def test_the_page_uses_the_one_pixel_limit() -> None:
    assert DataConfig().max_pixels == DEFAULT_MAX_PIXELS


def test_a_dicom_upload_is_named_as_dicom() -> None:
    with pytest.raises(ImageRejected) as err:
        decode_image_bytes(dicom_bytes(), "chest.dcm", 32)
    assert err.value.status == 415  # a format the data layer does not read (issue 20)
    assert err.value.message == "chest.dcm: DICOM is not supported: convert to PNG/JPEG"


def test_concurrent_requests_decode_within_the_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import threading
    import time

    from PIL import Image

    from clot_hpo.data.limits import MemoryBudget
    from clot_hpo.serve import app as app_module

    buffer = io.BytesIO()
    Image.new("RGB", (200, 200)).save(buffer, format="PNG")
    uploads = [("a.png", buffer.getvalue()), ("b.png", buffer.getvalue())]
    in_flight, most = 0, 0
    lock = threading.Lock()

    def slow_decode(data: bytes, name: str, size: int, *, max_pixels: int, display: bool) -> str:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        return name

    monkeypatch.setattr(app_module, "decode_image_bytes", slow_decode)
    one_request = 2 * 200 * 200 * DECODE_BYTES_PER_PIXEL
    budget = MemoryBudget(one_request + one_request // 2)  # room for one request, not two

    def request() -> None:
        with app_module.holding(budget, uploads, 10**6):
            app_module.decode_uploads(uploads, 32, 10**6)

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1 and budget.peak == one_request
