"""Issue 12: the web page shares the data layer's pixel limit; issue 23: it reads DICOM uploads."""

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


def test_a_dicom_upload_without_an_image_is_415_with_the_decoders_sentence() -> None:
    with pytest.raises(ImageRejected) as err:
        decode_image_bytes(dicom_bytes(), "chest.dcm", 32)
    assert err.value.status == 415
    assert err.value.message.startswith("chest.dcm: no pixel data")
    assert "transfer syntax Implicit VR Little Endian (1.2.840.10008.1.2)" in err.value.message


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

    def slow_decode(
        data: bytes, name: str, size: int, *, max_pixels: int, display: bool, dicom: object
    ) -> str:
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


def test_a_dicom_upload_is_decoded_and_its_header_values_stay_out_of_the_answer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Issue 23: the page decodes DICOM through the data layer; a refusal names no header value.
    import numpy as np

    from tests.support.dicom import identifying_values, write_dicom

    phi = {"PatientName": "Kowalski^Anna", "PatientID": "MRN55501234", "InstitutionName": "Mercy West"}
    single = write_dicom(tmp_path / "a.dcm", np.full((40, 40), 900, np.uint16), **phi)
    image = decode_image_bytes(single.read_bytes(), "a.dcm", 32)
    assert image.model_input.shape == (32, 32, 3) and image.model_input.dtype == np.float32
    frames = write_dicom(tmp_path / "m.dcm", np.zeros((3, 40, 40), np.uint16), **phi)
    with pytest.raises(ImageRejected) as err:
        decode_image_bytes(frames.read_bytes(), "m.dcm", 32)
    assert err.value.status == 415 and "multi-frame DICOM (3 frames)" in err.value.message
    values = identifying_values([single, frames])
    assert {"Kowalski^Anna", "MRN55501234", "Mercy West"} <= values
    assert not [v for v in values if v in err.value.message + repr(image.filename)]


def test_a_dicom_upload_over_the_pixel_limit_is_413_and_a_bad_frame_415(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from clot_hpo.data.dicom import DicomSettings
    from tests.support.dicom import write_dicom

    data = write_dicom(tmp_path / "a.dcm", np.zeros((3, 40, 40), np.uint16)).read_bytes()
    with pytest.raises(ImageRejected) as err:
        decode_image_bytes(data, "a.dcm", 32, max_pixels=4_000, dicom=DicomSettings(frame=0))
    assert err.value.status == 413 and err.value.message.startswith("a.dcm: too many pixels")
    with pytest.raises(ImageRejected) as err:
        decode_image_bytes(data, "a.dcm", 32, dicom=DicomSettings(frame=5))
    assert err.value.status == 415
    assert "data.dicom.frame is 5, but this file has 3 frames" in err.value.message


def test_the_pages_dicom_settings_reach_the_decoder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The page decodes DICOM with the study's data.dicom (serve --dicom-frame / --dicom-window),
    # as `predict` does: a multi-frame file refused by default is read once a frame is named,
    # and the window changes the pixels the model sees.
    import numpy as np

    from clot_hpo.data.dicom import DicomSettings
    from clot_hpo.serve import app as app_module
    from tests.support.dicom import write_dicom

    ramp = np.tile(np.linspace(0, 2000, 40, dtype=np.uint16), (3, 40, 1))
    frames = write_dicom(tmp_path / "m.dcm", ramp).read_bytes()
    uploads = [("m.dcm", frames)]
    budget = app_module.MemoryBudget(2**30)
    with pytest.raises(ImageRejected), app_module.holding(budget, uploads, 10**6):
        pass
    framed = DicomSettings(frame=1)
    with app_module.holding(budget, uploads, 10**6, framed):
        (full,), _ = app_module.decode_uploads(uploads, 32, 10**6, dicom=framed)
    narrow = DicomSettings(window=(1000.0, 200.0), frame=1)
    (windowed,), _ = app_module.decode_uploads(uploads, 32, 10**6, dicom=narrow)
    assert full.model_input.shape == windowed.model_input.shape == (32, 32, 3)
    # Full range: a smooth ramp; a 200-wide window at 1000: saturated at both ends.
    assert 0 < float(full.model_input[0, 16, 0]) < 255
    assert float(windowed.model_input[0, 0, 0]) == 0.0
    assert float(windowed.model_input[0, -1, 0]) == pytest.approx(255.0, abs=1e-3)
