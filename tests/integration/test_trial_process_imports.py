"""The trial process never imports MLflow: its tracking is spooled for the study process."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys

from clot_hpo.search.trial import epochs, evaluation, phases
from clot_hpo.search.trial import process as trial_process


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _modules_imported_by(func: object) -> set[str]:
    tree = ast.parse(inspect.getsource(trial_process))
    return _imports(
        next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == func.__name__)
    )


def test_nothing_the_trial_process_imports_pulls_in_mlflow() -> None:
    # preload: what a waiting trial process imports; run_trial and its phases: what a trial imports.
    modules = sorted(
        _modules_imported_by(trial_process.preload)
        | _modules_imported_by(trial_process.run_trial)
        | {name for m in (phases, epochs, evaluation) for name in _imports(ast.parse(inspect.getsource(m)))}
    )
    assert "clot_hpo.tracking.spool" in modules and "keras" in modules  # the walk found the imports
    assert "clot_hpo.data.cache" in modules and "sklearn.metrics" in modules
    assert "clot_hpo.explain" in modules and "clot_hpo.budget" in modules
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
