"""Issue 12: the web page shares the data layer's pixel limit and names DICOM uploads."""

from __future__ import annotations

import pytest

from clot_hpo.config import DataConfig
from clot_hpo.serve.images import DEFAULT_MAX_PIXELS, ImageRejected, decode_image_bytes
from tests.unit.data.test_boundaries import dicom_bytes


def test_the_page_uses_the_one_pixel_limit() -> None:
    assert DataConfig().max_pixels == DEFAULT_MAX_PIXELS


def test_a_dicom_upload_is_named_as_dicom() -> None:
    with pytest.raises(ImageRejected) as err:
        decode_image_bytes(dicom_bytes(), "chest.dcm", 32)
    assert err.value.status == 400
    assert err.value.message == "chest.dcm: DICOM is not supported: convert to PNG/JPEG"
