"""Import boundaries, seen from a fresh interpreter: what a package pulls in when imported.

A test process has TensorFlow, MLflow and Optuna loaded already, so each check runs
``python -c`` and reads that interpreter's ``sys.modules``. Moved here from the unit tests of
``models/``, ``search_space/`` and ``util`` (a unit test starts no process: tests/README.md).
"""

from __future__ import annotations

import subprocess
import sys

from tests.support.cli import REPO


def test_catalogues_import_without_keras_or_tensorflow() -> None:
    code = (
        "import sys; import clot_hpo.models, clot_hpo.config, clot_hpo.budget.estimator; "
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_packages_import_their_names_on_first_use_only() -> None:
    """data/, search/ and serve/ share util.lazy_exports: nothing heavy loads until a name is used."""
    code = """
import sys
import clot_hpo.data, clot_hpo.search, clot_hpo.serve
heavy = ("tensorflow", "optuna", "fastapi", "pandas")
print(sorted(m for m in heavy if m in sys.modules))
print("make_dataset" in dir(clot_hpo.data), "run_search" in dir(clot_hpo.search))
try:
    clot_hpo.serve.no_such_name
except AttributeError as exc:
    print(exc)
from clot_hpo.search import redact_url
print(redact_url is clot_hpo.search.storage.redact_url, "redact_url" in vars(clot_hpo.search))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "[]",
        "True True",
        "module 'clot_hpo.serve' has no attribute 'no_such_name'",
        "True True",
    ], out.stdout


def test_search_space_package_does_not_import_keras_tensorflow_or_optuna() -> None:
    code = (
        "import sys, clot_hpo.search_space as s; "
        "s.load_search_space(s.default_search_space_path('tiny_cnn')); "
        "heavy = [m for m in ('keras', 'tensorflow', 'optuna', 'keras_tuner') "
        "if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_metric_catalogue_is_full_without_matplotlib() -> None:
    """evaluate/ exports lazily, yet importing the catalogue alone registers every built-in metric.

    The built-in entries are registered by evaluate/metrics.py; a trial's outcome and the
    ledger list their metrics from the catalogue at import time, so an empty catalogue would
    silently drop test_auc from what a trial records.
    """
    code = """
import sys
from clot_hpo.evaluate.catalogue import metric_names
print(",".join(sorted(metric_names())))
print("matplotlib" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, matplotlib_loaded = out.stdout.splitlines()
    assert {"auc", "accuracy", "sensitivity", "specificity", "ppv", "npv"} <= set(names.split(","))
    assert matplotlib_loaded == "False"
