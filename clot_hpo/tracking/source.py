"""Which code produced a run: the git commit of the clot-hpo checkout, when it is one.

MLflow fills ``mlflow.source.git.commit`` itself only for runs started with ``mlflow.start_run``
from a script inside a repository; the study creates its runs through ``MlflowClient``, so it
records the commit itself. An installed wheel has no repository: the tag is left out and the
model card says so.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

TAG_GIT_COMMIT = "mlflow.source.git.commit"  # the tag MLflow's UI shows as the run's source version


@functools.cache
def git_commit() -> str | None:
    """The commit of the clot-hpo checkout this code runs from, with ``-dirty`` if edited; else None."""
    package = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(package), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):  # no git installed, or it hung
        return None
    commit = head.stdout.strip()
    return f"{commit}-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else commit


def source_tags() -> dict[str, str]:
    """Tags naming the code version, for every run the study creates."""
    commit = git_commit()
    return {TAG_GIT_COMMIT: commit} if commit else {}
