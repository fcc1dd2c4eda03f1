"""What the study process hands a trial's child process, and what it gets back.

Both travel as JSON files: the child is a fresh ``python -m clot_hpo.search.trial.process``
process (started ahead of its task, see :mod:`clot_hpo.search.trial.launcher`), so nothing but
these files, the task file's path on the child's stdin and the shared Optuna storage crosses
the boundary.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clot_hpo.util import redact_secrets, redact_text, redact_url

# Set by the study process for the trial processes it starts ahead: the Optuna storage URL, so
# that a waiting process opens it (and imports SQLAlchemy and Alembic, ~2 s) before its task.
# It is also where a trial process gets the URL's password: task files hold it redacted.
PRELOAD_STORAGE_ENV = "CLOT_HPO_PRELOAD_STORAGE"
# The line a trial process prints once its outcome is written while it still has work to do
# (the evaluation's intervals and figures): the study process goes on with the next trial.
OUTCOME_WRITTEN = "clot-hpo: outcome written"


@dataclass
class TrialTask:
    """Everything a child process needs to run one Optuna trial."""

    config: dict[str, Any]
    study_name: str
    storage: str
    trial_id: int
    trial_number: int
    # Where the child records its tracking for the study process to forward ("": untracked).
    spool_dir: str
    manifest_path: str
    spaces: dict[str, str]
    max_epochs: int
    result_path: str
    attempt: int = 0
    # The study's decode cache (clot_hpo.data.cache; "": decode in memory, no cache) and the
    # dataset's content digest, part of the cache key.
    cache_dir: str = ""
    data_digest: str = ""
    # time.time() when the study process handed the task over (None: the task was not handed
    # over by a study process): the trial's clock starts here.
    handed_at: float | None = None
    # Set on the runtime-OOM retry: the batch the child must use, with accumulation.
    batch_override: int | None = None
    accumulation_override: int | None = None
    # Where the trial writes its per-epoch checkpoint ("": none, search.resume is off), and
    # the checkpoint it resumes from ("": from scratch), of trial `resume_trial`.
    checkpoint_path: str = ""
    resume_from: str = ""
    resume_trial: int | None = None
    # A retry trains with the seed of the trial it retries (its lineage's first): the same
    # dropout, augmentation and data order as the trial it continues.
    seed_trial: int | None = None
    # Seconds SIGTERM leaves the trial to finish its epoch's checkpoint (search.preemption_grace_s).
    preemption_grace_s: float = 25.0

    def save(self, path: Path) -> Path:
        """Write the task as JSON (mode 0600), every URL's password hidden.

        The trial process gets the storage's password from its environment
        (:data:`PRELOAD_STORAGE_ENV`), never from a file.
        """
        _atomic_write_json(path, redact_secrets(asdict(self)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrialTask:
        """Read a task written by :meth:`save`; the storage URL's password comes from the environment."""
        task = cls(**json.loads(Path(path).read_text(encoding="utf-8")))
        secret = os.environ.get(PRELOAD_STORAGE_ENV, "")
        if secret and secret != task.storage and redact_url(secret) == task.storage:
            task.storage = secret
            search = task.config.get("search")
            if isinstance(search, dict) and search.get("storage") == redact_url(secret):
                search["storage"] = secret
        return task


@dataclass
class TrialOutcome:
    """How a trial ended, as the child saw it."""

    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None = None
    reason: str | None = None
    epochs_run: int = 0
    oom: bool = False
    batch_size: int | None = None
    accumulation_steps: int = 1
    metrics: dict[str, float] = field(default_factory=dict)
    # time_<phase> -> seconds (clot_hpo.search.trial.timing), as far as the trial got.
    timings: dict[str, float] = field(default_factory=dict)
    # Stopped by SIGTERM (after its checkpoint, or at the end of the grace time).
    preempted: bool = False
    # Epochs taken over from a checkpoint (0: trained from scratch); `epochs_run` includes them.
    resumed_from_epoch: int = 0

    def save(self, path: str | Path) -> None:
        """Write the outcome as JSON (atomically: a crash never leaves half a file).

        The reason is an error's message: any URL's password in it is hidden (it becomes a
        tag of the trial's run and a user attribute of its Optuna trial).
        """
        if self.reason:
            self.reason = redact_text(self.reason)
        _atomic_write_json(Path(path), asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> TrialOutcome | None:
        """Read an outcome, or None when the child died before writing one."""
        path = Path(path)
        if not path.is_file():
            return None
        outcome = cls(**json.loads(path.read_text(encoding="utf-8")))
        if outcome.reason:
            outcome.reason = redact_text(outcome.reason)
        return outcome


def _atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    # Owner only: a task names the study's storage and data, for no other user to read.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
