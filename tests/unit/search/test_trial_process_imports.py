"""The trial process never imports MLflow: its tracking is spooled for the study process."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys

from clot_hpo.search import trial_process


def _modules_imported_by(func: object) -> list[str]:
    tree = ast.parse(inspect.getsource(trial_process))
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == func.__name__)
    names = []
    for node in ast.walk(fn):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return sorted(set(names))


def test_nothing_the_trial_process_imports_pulls_in_mlflow() -> None:
    # preload: what a waiting trial process imports; run_trial: what a trial imports.
    modules = sorted(
        set(_modules_imported_by(trial_process.preload)) | set(_modules_imported_by(trial_process.run_trial))
    )
    assert "clot_hpo.tracking.spool" in modules and "keras" in modules  # the walk found the imports
    assert "clot_hpo.data.cache" in modules and "sklearn.metrics" in modules
    code = (
        f"import sys\nfor m in {modules!r}: __import__(m)\n"
        "print(sorted(m for m in sys.modules if m == 'mlflow' or m.startswith('mlflow.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
        cwd=".",
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
