"""A registered model for people: the diagnostic web page, its API, and ``clot-hpo explain``.

* :mod:`clot_hpo.serve.app`: the FastAPI application (page, ``/api/predict``,
  ``/api/explain``, ``/api/model``, ``/healthz``) with its upload limits.
* :mod:`clot_hpo.serve.service`: the model loaded once through :mod:`clot_hpo.registry`,
  its Grad-CAM (:mod:`clot_hpo.explain`) and metadata.
* :mod:`clot_hpo.serve.images`: uploaded bytes to pixels (pixel limit before decoding).
* :mod:`clot_hpo.serve.commands`: ``clot-hpo serve`` and ``clot-hpo explain``.

A research tool, not a diagnostic device. Names are imported on first use (PEP 562), so
importing the package loads neither FastAPI nor TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clot_hpo.util import lazy_exports

if TYPE_CHECKING:
    from clot_hpo.serve.app import Limits, create_app
    from clot_hpo.serve.commands import explain_command, serve_command
    from clot_hpo.serve.images import ImageRejected, decode_image_bytes
    from clot_hpo.serve.service import ModelInfo, ModelService, load_service

_WHERE = {
    "Limits": "app",
    "create_app": "app",
    "explain_command": "commands",
    "serve_command": "commands",
    "ImageRejected": "images",
    "decode_image_bytes": "images",
    "ModelInfo": "service",
    "ModelService": "service",
    "load_service": "service",
}

# Spelled out so type checkers see the exports; tests/unit/test_public_api.py checks that
# it names the same things as _WHERE.
__all__ = [
    "ImageRejected",
    "Limits",
    "ModelInfo",
    "ModelService",
    "create_app",
    "decode_image_bytes",
    "explain_command",
    "load_service",
    "serve_command",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals())
