"""Wall time of a study whose worker is killed twice: resuming from checkpoints vs from scratch.

Three runs of the same one-trial study (the tiny CNN, the search space's defaults, the same
seed), each in a fresh folder with its own SQLite storage, tracking off:

* ``uninterrupted``: one worker runs the trial to its end.
* ``resume`` (``search.resume: true``, the default): the worker is killed with SIGKILL (its
  whole process group, as a lost machine) once the running attempt has trained ``--kill-after``
  epochs of its own, a new worker is started at once, twice; the heartbeat marks the trial
  dead after its grace period, and the retry resumes from the last checkpoint.
* ``scratch`` (``search.resume: false``, the behaviour before checkpoints): the same kills;
  each retry starts from epoch 1.

Prints one JSON object with the three wall times (first worker's start to the last worker's
exit, the kills and the heartbeat's grace period included), the epochs each trained, and the
ratios ``resume / uninterrupted``, ``scratch / uninterrupted`` and ``resume / scratch``::

    .venv/bin/python benchmarks/preemption.py [--epochs 6] [--kill-after 2] [--per-class 60]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
CLOT_HPO = str(BIN / "clot-hpo") if (BIN / "clot-hpo").exists() else "clot-hpo"
HEARTBEAT_INTERVAL, GRACE_PERIOD = 1, 3


def write_config(folder: Path, *, epochs: int, per_class: int, image_size: int, resume: bool) -> Path:
    """A one-trial study of the tiny CNN's defaults (``search.defaults_first``), no pruning."""
    space = yaml.safe_load((ROOT / "search_spaces" / "tiny_cnn.yaml").read_text(encoding="utf-8"))
    space["parameters"]["image_size"] = {"type": "fixed", "value": image_size}
    (folder / "tiny_cnn.yaml").write_text(yaml.safe_dump(space, sort_keys=False), encoding="utf-8")
    config = {
        "name": "preemption",
        "seed": 7,
        "data": {
            "path": str(folder / "data"),
            "synthetic": {"n_per_class": per_class, "image_size": image_size},
            "val_fraction": 0.2,
            "test_fraction": 0.2,
        },
        "training": {"epochs": epochs, "weights": "none"},
        "search": {
            "backbones": ["tiny_cnn"],
            "search_spaces": {"tiny_cnn": "tiny_cnn.yaml"},
            "storage": "sqlite:///mlruns/optuna.db",
            "pruner": "none",
            "n_trials": 1,
            "heartbeat_interval": HEARTBEAT_INTERVAL,
            "grace_period": GRACE_PERIOD,
            "max_retry": 3,
            "max_resumes": 3,
            "resume": resume,
        },
        "evaluation": {"bootstrap_samples": 100, "explanations": False},
    }
    path = folder / "preemption.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def start_worker(config: Path, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """``clot-hpo search CONFIG --no-tracking`` in its own session (so a kill takes its trial)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        return subprocess.Popen(
            [CLOT_HPO, "search", str(config), "--no-tracking"],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def running_attempt(storage: str, skip: set[int]) -> tuple[int, int] | None:
    """(number, epochs it trained itself) of the RUNNING trial not in ``skip``, or None.

    A killed worker's trial stays RUNNING until the heartbeat's grace period has passed:
    ``skip`` holds the trials already killed.
    """
    import optuna

    try:
        study = optuna.load_study(study_name="preemption", storage=storage)
    except Exception:  # noqa: BLE001 - the study is being created
        return None
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name == "RUNNING" and trial.number not in skip:
            resumed = int(trial.user_attrs.get("resumed_from_epoch", 0) or 0)
            return trial.number, len(trial.intermediate_values) - resumed
    return None


def run(folder: Path, *, kills: int, kill_after: int, **settings: Any) -> dict[str, Any]:
    """Run the study in ``folder`` with ``kills`` SIGKILLs; its wall time and epochs trained."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder.mkdir(parents=True)
    config = write_config(folder, **settings)
    storage = f"sqlite:///{folder / 'mlruns' / 'optuna.db'}"
    log = folder / "workers.log"
    started = time.monotonic()
    worker = start_worker(config, folder, log)
    killed: set[int] = set()
    for _ in range(kills):
        while True:
            attempt = running_attempt(storage, killed)
            if attempt is not None and attempt[1] >= kill_after:
                break
            if worker.poll() is not None:
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"the worker exited {worker.returncode} before its kill:\n{tail}")
            time.sleep(0.1)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        killed.add(attempt[0])
        worker = start_worker(config, folder, log)
    code = worker.wait(timeout=3600)
    elapsed = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"the last worker exited {code}:\n{log.read_text()[-3000:]}")
    study = optuna.load_study(study_name="preemption", storage=storage)
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    trained = sum(
        int(t.user_attrs.get("epochs_run", 0) or 0) - int(t.user_attrs.get("resumed_from_epoch", 0) or 0)
        for t in trials
    )
    return {
        "wall_s": round(elapsed, 1),
        "epochs_trained": trained,
        "trials": len(trials),
        "val_auc": round(float(done[0].value), 4) if done else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the trial")
    parser.add_argument("--kill-after", type=int, default=2, help="epochs an attempt trains before its kill")
    parser.add_argument("--per-class", type=int, default=60, help="synthetic images per class")
    parser.add_argument("--image-size", type=int, default=48, help="image side in pixels")
    args = parser.parse_args()
    if args.kill_after * 2 >= args.epochs:
        parser.error(f"`2 * --kill-after < --epochs` must hold, but got {args.kill_after} and {args.epochs}")
    settings = {"epochs": args.epochs, "per_class": args.per_class, "image_size": args.image_size}
    with tempfile.TemporaryDirectory(prefix="clot-hpo-preemption-") as tmp:
        root = Path(tmp)
        results = {
            "uninterrupted": run(root / "uninterrupted", kills=0, kill_after=0, resume=True, **settings),
            "resume": run(root / "resume", kills=2, kill_after=args.kill_after, resume=True, **settings),
            "scratch": run(root / "scratch", kills=2, kill_after=args.kill_after, resume=False, **settings),
        }
    base = results["uninterrupted"]["wall_s"]
    print(
        json.dumps(
            {
                "settings": {
                    **settings,
                    "kill_after": args.kill_after,
                    "kills": 2,
                    "grace_period_s": GRACE_PERIOD,
                },
                **results,
                "ratio_resume_vs_uninterrupted": round(results["resume"]["wall_s"] / base, 2),
                "ratio_scratch_vs_uninterrupted": round(results["scratch"]["wall_s"] / base, 2),
                "ratio_resume_vs_scratch": round(
                    results["resume"]["wall_s"] / results["scratch"]["wall_s"], 2
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
