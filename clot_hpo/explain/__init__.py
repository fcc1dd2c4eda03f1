"""Explanations of a binary clot classifier: Grad-CAM maps, overlays, a trial's failure gallery.

* :mod:`clot_hpo.explain.gradcam`: :class:`GradCam` finds the last 4-D feature map of any
  Keras functional model and computes the positive class's map; :func:`overlay` draws it.
* :mod:`clot_hpo.explain.gallery`: :func:`failure_gallery`, one figure per kind (confident
  true positives, false positives, false negatives), for the trial's tracked run.

Nothing here loads a model or logs anything: callers pass a Keras model in (``clot-hpo
explain`` and ``serve`` load registered ones through :mod:`clot_hpo.registry`). Grad-CAM
passes the randomisation sanity checks of Adebayo et al. (2018) but localizes worse than
radiologists (Saporta et al., 2022): it is shown as an aid, never as a finding.
"""

from __future__ import annotations

from clot_hpo.explain.gallery import DEFAULT_PER_KIND, GALLERY_KINDS, failure_gallery, select_gallery
from clot_hpo.explain.gradcam import GradCam, feature_layer, overlay, png_bytes, upsample

__all__ = [
    "DEFAULT_PER_KIND",
    "GALLERY_KINDS",
    "GradCam",
    "failure_gallery",
    "feature_layer",
    "overlay",
    "png_bytes",
    "select_gallery",
    "upsample",
]
