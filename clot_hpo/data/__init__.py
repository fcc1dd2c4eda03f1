"""The data layer: scanning both layouts, validation, DICOM, splits, leakage report, ``tf.data``.

It neither augments nor logs to MLflow. Names are imported on first use (PEP 562), so
``from clot_hpo.data.synthetic import make_synthetic`` or a command that fails early does not
pay for pandas, scikit-learn and TensorFlow; TensorFlow itself loads only when a ``tf.data``
pipeline is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clot_hpo.util import lazy_exports

if TYPE_CHECKING:
    from clot_hpo.data.dicom import DicomRefused, DicomSettings, decode_dicom
    from clot_hpo.data.leakage import DuplicatePair, LeakageReport, find_leakage
    from clot_hpo.data.pipeline import list_images, load_image_batch, make_dataset
    from clot_hpo.data.prepare import PreparedData, dataset_digest, prepare_data
    from clot_hpo.data.scan import scan_dataset
    from clot_hpo.data.split import SPLITS, assign_splits, split_counts
    from clot_hpo.data.synthetic import make_synthetic
    from clot_hpo.data.synthetic_dicom import make_synthetic_dicom
    from clot_hpo.data.validate import ImageInfo, ValidationResult, inspect_image, validate_images

_WHERE = {
    "DicomRefused": "dicom",
    "DicomSettings": "dicom",
    "decode_dicom": "dicom",
    "make_synthetic_dicom": "synthetic_dicom",
    "DuplicatePair": "leakage",
    "LeakageReport": "leakage",
    "find_leakage": "leakage",
    "list_images": "pipeline",
    "load_image_batch": "pipeline",
    "make_dataset": "pipeline",
    "PreparedData": "prepare",
    "dataset_digest": "prepare",
    "prepare_data": "prepare",
    "scan_dataset": "scan",
    "SPLITS": "split",
    "assign_splits": "split",
    "split_counts": "split",
    "make_synthetic": "synthetic",
    "ImageInfo": "validate",
    "ValidationResult": "validate",
    "inspect_image": "validate",
    "validate_images": "validate",
}

# Spelled out (not ``sorted(_WHERE)``) so type checkers see the exports;
# tests/unit/test_public_api.py checks that both name the same things.
__all__ = [
    "SPLITS",
    "DicomRefused",
    "DicomSettings",
    "DuplicatePair",
    "ImageInfo",
    "LeakageReport",
    "PreparedData",
    "ValidationResult",
    "assign_splits",
    "dataset_digest",
    "decode_dicom",
    "find_leakage",
    "inspect_image",
    "list_images",
    "load_image_batch",
    "make_dataset",
    "make_synthetic",
    "make_synthetic_dicom",
    "prepare_data",
    "scan_dataset",
    "split_counts",
    "validate_images",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals())
