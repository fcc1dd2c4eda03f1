"""The data layer: scanning both layouts, validation, DICOM, splits, leakage report, ``tf.data``.

It neither augments nor logs to MLflow. Names are imported on first use (PEP 562), so
``from clot_hpo.data.synthetic import make_synthetic`` or a command that fails early does not
pay for pandas, scikit-learn and TensorFlow; TensorFlow itself loads only when a ``tf.data``
pipeline is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clot_hpo.util import lazy_exports

if TYPE_CHECKING:  # the one list of exports: lazy_exports reads it (util.lazy_exports)
    from clot_hpo.data.dicom import DicomRefused as DicomRefused
    from clot_hpo.data.dicom import DicomSettings as DicomSettings
    from clot_hpo.data.dicom import decode_dicom as decode_dicom
    from clot_hpo.data.leakage import DuplicatePair as DuplicatePair
    from clot_hpo.data.leakage import LeakageReport as LeakageReport
    from clot_hpo.data.leakage import find_leakage as find_leakage
    from clot_hpo.data.pipeline import list_images as list_images
    from clot_hpo.data.pipeline import load_image_batch as load_image_batch
    from clot_hpo.data.pipeline import make_dataset as make_dataset
    from clot_hpo.data.prepare import PreparedData as PreparedData
    from clot_hpo.data.prepare import dataset_digest as dataset_digest
    from clot_hpo.data.prepare import prepare_data as prepare_data
    from clot_hpo.data.scan import scan_dataset as scan_dataset
    from clot_hpo.data.split import SPLITS as SPLITS
    from clot_hpo.data.split import assign_splits as assign_splits
    from clot_hpo.data.split import split_counts as split_counts
    from clot_hpo.data.synthetic import make_synthetic as make_synthetic
    from clot_hpo.data.synthetic_dicom import make_synthetic_dicom as make_synthetic_dicom
    from clot_hpo.data.validate import ImageInfo as ImageInfo
    from clot_hpo.data.validate import ValidationResult as ValidationResult
    from clot_hpo.data.validate import inspect_image as inspect_image
    from clot_hpo.data.validate import validate_images as validate_images

__getattr__, __dir__ = lazy_exports(globals())
