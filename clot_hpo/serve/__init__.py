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

if TYPE_CHECKING:  # the one list of exports: lazy_exports reads it (util.lazy_exports)
    from clot_hpo.serve.app import Limits as Limits
    from clot_hpo.serve.app import create_app as create_app
    from clot_hpo.serve.commands import explain_command as explain_command
    from clot_hpo.serve.commands import serve_command as serve_command
    from clot_hpo.serve.images import ImageRejected as ImageRejected
    from clot_hpo.serve.images import decode_image_bytes as decode_image_bytes
    from clot_hpo.serve.service import ModelInfo as ModelInfo
    from clot_hpo.serve.service import ModelService as ModelService
    from clot_hpo.serve.service import load_service as load_service

__getattr__, __dir__ = lazy_exports(globals())
