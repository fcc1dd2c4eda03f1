"""Time to a champion: no pruning, Hyperband on epochs, progressive resizing, resolution fidelity, both.

Five arms of ``clot-hpo search`` (no tracking), one after the other in this run, on each of
two tasks, with the same configurations and seeds: the random sampler with the study's seed
draws the same hyperparameters for trial ``n`` in every arm (TPE would part ways as soon as
the arms' values differ; ``--sampler tpe`` measures that instead).

=====  ==========================================================================
arm    settings
=====  ==========================================================================
a      ``pruner: none``: every trial runs every epoch at full size (the reference)
b      ``pruner: hyperband``, ``fidelity: epochs``: today's default
c      (b) + ``training.progressive_resize`` (the side grows over the first epochs)
d      ``pruner: hyperband``, ``fidelity: resolution`` (low rungs at reduced sides)
e      (d) with ``fidelity: both`` + progressive resizing: every lever at once
=====  ==========================================================================

Tasks: ``demo`` is the quickstart's (``experiments/quickstart.yaml``: synthetic ``easy``,
300 images per class at 48 px, 6 epochs, its three backbones and their bundled quickstart
search spaces); ``hard`` is the synthetic ``hard`` level at 64 px, the same spaces at that
side; 6 trials per arm on ``demo``, 4 on ``hard``. For each arm: wall time of the whole
command, pixel-epochs (training images x side^2, summed over the epochs run; in millions), best
validation AUC, the test AUC of the best trial,
and the seconds from the study's start to the first completed trial within 0.01 of the task's
best validation AUC over all arms (its "champion"). Ratios are over arm (a).

Item 3 of the issue, does a low fidelity rank configurations like the final value: the
Spearman correlation over the configurations of arm (a) between their validation AUC after
epoch 2 (the first epoch rung, full size) and their final one; and between the value of the
same configurations after arm (d)'s low-resolution rung (epoch 2, at ``fidelity_sizes[0]``)
and their final value in arm (a). Every trial of arm (d) reaches that rung, and trial ``n``
has the same hyperparameters in every arm (checked), so no extra study is needed.

Prints one JSON object per arm as it finishes, then the whole result and a table per task.

    .venv/bin/python benchmarks/time_to_champion.py [--tasks demo,hard] [--trials N]
        [--sampler random] [--fidelity-sizes 0.5] [--json out.json]
    .venv/bin/python benchmarks/time_to_champion.py --smoke    # tiny CNN, 3 trials: a few minutes

Uptime's load average is printed with the result: wall times on a shared machine move by tens
of percent, so compare arms of one run only, and prefer the CPU time (the search and its trial
processes, user + system) and the pixel-epochs there: other jobs do not inflate them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import children_cpu_s

REPO = Path(__file__).resolve().parents[1]
AUC_MARGIN = 0.01  # "reached the champion": within this of the task's best validation AUC


@dataclass(frozen=True)
class Task:
    """One benchmark task: synthetic data and the study's training."""

    name: str
    difficulty: str
    n_per_class: int
    image_size: int
    epochs: int
    backbones: tuple[str, ...]
    trials: int


TASKS = {
    "demo": Task("demo", "easy", 300, 48, 6, ("efficientnet_b1", "resnet50", "tiny_cnn"), 6),
    "hard": Task("hard", "hard", 300, 64, 6, ("efficientnet_b1", "resnet50", "tiny_cnn"), 4),
}
SMOKE = {
    "demo": Task("demo", "easy", 40, 32, 4, ("tiny_cnn",), 3),
    "hard": Task("hard", "hard", 40, 48, 4, ("tiny_cnn",), 3),
}

# Arm -> the config's search and training settings (pruner, fidelity, progressive resizing).
ARMS: dict[str, dict[str, Any]] = {
    "a_none": {"pruner": "none", "fidelity": "epochs", "progressive": False},
    "b_epochs": {"pruner": "hyperband", "fidelity": "epochs", "progressive": False},
    "c_progressive": {"pruner": "hyperband", "fidelity": "epochs", "progressive": True},
    "d_resolution": {"pruner": "hyperband", "fidelity": "resolution", "progressive": False},
    "e_both": {"pruner": "hyperband", "fidelity": "both", "progressive": True},
}


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def write_spaces(work: Path, task: Task) -> dict[str, Path]:
    """The bundled quickstart spaces at the task's image side (the demo's: unchanged)."""
    from clot_hpo.search_space.files import locate_search_space

    spaces = {}
    for backbone in task.backbones:
        text = locate_search_space(f"quickstart_{backbone}").read_text()
        text, found = re.subn(
            r"image_size: \{type: fixed, value: \d+\}",
            f"image_size: {{type: fixed, value: {task.image_size}}}",
            text,
        )
        if found != 1:
            raise SystemExit(f"the quickstart space of {backbone} has no fixed image_size to set")
        spaces[backbone] = work / f"{task.name}-{backbone}.yaml"
        spaces[backbone].write_text(text)
    return spaces


def write_config(
    work: Path, task: Task, data: Path, spaces: dict[str, Path], name: str, arm: dict[str, Any], args: Any
) -> Path:
    """One arm's study config; every arm of a task differs only in the keys of ``arm``."""
    config = work / f"{name}.yaml"
    spaces_yaml = ", ".join(f"{b}: {p}" for b, p in spaces.items())
    progressive = (
        f"progressive_resize: {{enabled: true, start_fraction: {args.start_fraction}, "
        f"full_size_epoch: {args.full_size_epoch}}}"
        if arm["progressive"]
        else "progressive_resize: {enabled: false}"
    )
    sizes = ", ".join(str(s) for s in args.fidelity_sizes)
    config.write_text(
        f"name: {name}\nseed: 1\n"
        f"data: {{path: {data}, group_column: group, val_fraction: 0.2, test_fraction: 0.2}}\n"
        f"training: {{epochs: {task.epochs}, weights: none, {progressive}}}\n"
        f"search: {{backbones: [{', '.join(task.backbones)}], search_spaces: {{{spaces_yaml}}}, "
        f"pruner: {arm['pruner']}, fidelity: {arm['fidelity']}, fidelity_sizes: [{sizes}], "
        f"sampler: {args.sampler}, storage: 'sqlite:///{work}/optuna.db', "
        f"n_trials: {args.trials or task.trials}, "
        "defaults_first: false}\n"
        "evaluation: {bootstrap_samples: 200}\n"
        "budget: {vram_gb: 4}\n"
    )
    return config


def run_study(work: Path, config: Path, name: str) -> tuple[float, float, Any]:
    """Run ``clot-hpo search`` to its trial budget; its wall time, CPU time and the Optuna study.

    The CPU time (the search process and its trial processes, which it waits for) is the figure
    to compare on a shared machine: wall time there also counts other jobs' turns on the cores.
    """
    import optuna

    cpu_before = children_cpu_s()
    started = time.monotonic()
    with open(work / f"{name}.log", "w") as out, open(work / f"{name}.err", "w") as err:
        code = subprocess.call(
            [sys.executable, "-m", "clot_hpo.cli", "search", str(config), "--no-tracking"],
            cwd=work,
            env=_env(),
            stdout=out,
            stderr=err,
        )
    wall = time.monotonic() - started
    cpu = children_cpu_s() - cpu_before
    if code != 0:
        raise SystemExit(f"study {name} failed (exit {code}); see {work}/{name}.err")
    return wall, cpu, optuna.load_study(study_name=name, storage=f"sqlite:///{work}/optuna.db")


def _train_images(work: Path, study_name: str) -> int:
    """The training split's size, from the study's split manifest."""
    import csv

    manifest = work / "mlruns" / "studies" / study_name / "data" / "split_manifest.csv"
    with open(manifest, newline="") as fh:
        return sum(row["split"] == "train" for row in csv.DictReader(fh))


def pixel_epochs(trial: Any, train_images: int) -> float:
    """Millions of pixels trained on: each epoch run, its side squared times the training images."""
    run = int(trial.user_attrs.get("epochs_run", 0))
    sides = trial.user_attrs.get("epoch_sides") or [int(trial.params.get("image_size", 0) or 0)] * run
    return sum(int(s) ** 2 for s in sides[:run]) * train_images / 1e6


def summarize_arm(study: Any, wall: float, cpu: float, train_images: int, side: int) -> dict[str, Any]:
    """One arm's figures (the champion time is filled in once every arm of the task is known)."""
    trials = sorted(study.trials, key=lambda t: t.number)
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if not complete:
        raise SystemExit(f"study {study.study_name}: no trial completed")
    best = max(complete, key=lambda t: t.value)
    started = min(t.datetime_start for t in trials if t.datetime_start is not None)
    for t in trials:  # the space fixes image_size; pixel_epochs needs it when no sides were recorded
        t.params.setdefault("image_size", side)
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "pixel_epochs_m": round(sum(pixel_epochs(t, train_images) for t in trials), 3),
        "epochs": sum(int(t.user_attrs.get("epochs_run", 0)) for t in trials),
        "best_val_auc": round(float(best.value), 4),
        "test_auc_of_best": best.user_attrs.get("test_auc"),
        "best_trial": best.number,
        "complete": len(complete),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "failed": sum(t.state.name == "FAIL" for t in trials),
        # (seconds since the study's first trial started, value) of each completed trial
        "completions": [
            [round((t.datetime_complete - started).total_seconds(), 1), round(float(t.value), 4)]
            for t in complete
            if t.datetime_complete is not None
        ],
    }


def spearman(rung_study: Any, final_study: Any, rung_epoch: int) -> dict[str, Any]:
    """Spearman's rho between a configuration's value after ``rung_epoch`` epochs in ``rung_study``
    and its final value in ``final_study`` (trial ``n`` is the same configuration in both)."""
    from scipy.stats import spearmanr

    finals = {t.number: t for t in final_study.trials if t.state.name == "COMPLETE" and t.value is not None}
    pairs = []
    for t in rung_study.trials:
        final = finals.get(t.number)
        if final is None or (rung_epoch - 1) not in t.intermediate_values:
            continue
        if t.params != final.params:
            raise SystemExit(
                f"trial {t.number} drew other hyperparameters in {rung_study.study_name} than in "
                f"{final_study.study_name} ({t.params} != {final.params}): use --sampler random"
            )
        pairs.append((t.intermediate_values[rung_epoch - 1], final.value))
    if len(pairs) < 3:
        return {"rho": None, "configurations": len(pairs)}
    rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    return {"rho": None if rho != rho else round(float(rho), 3), "configurations": len(pairs)}


def run_task(work: Path, task: Task, args: Any) -> dict[str, Any]:
    """Every arm on one task, then the champion times, ratios and the Spearman figures."""
    from clot_hpo.data.synthetic import make_synthetic

    data = make_synthetic(
        work / f"data-{task.name}",
        n_per_class=task.n_per_class,
        image_size=task.image_size,
        seed=0,
        difficulty=task.difficulty,
    )
    spaces = write_spaces(work, task)
    arms: dict[str, dict[str, Any]] = {}
    studies: dict[str, Any] = {}
    for name, arm in ARMS.items():
        study_name = f"{task.name}-{name}"
        config = write_config(work, task, data, spaces, study_name, arm, args)
        wall, cpu, studies[name] = run_study(work, config, study_name)
        train_images = _train_images(work, study_name)
        arms[name] = summarize_arm(studies[name], wall, cpu, train_images, task.image_size)
        print(
            json.dumps({study_name: {k: v for k, v in arms[name].items() if k != "completions"}}), flush=True
        )
    champion = max(a["best_val_auc"] for a in arms.values())
    base = arms["a_none"]
    for figures in arms.values():
        reached = [s for s, v in figures["completions"] if v >= champion - AUC_MARGIN]
        figures["s_to_champion"] = min(reached) if reached else None
        figures["wall_ratio"] = round(figures["wall_s"] / base["wall_s"], 3)
        figures["cpu_ratio"] = round(figures["cpu_s"] / base["cpu_s"], 3)
        figures["pixel_epochs_ratio"] = round(figures["pixel_epochs_m"] / base["pixel_epochs_m"], 3)
        test, base_test = figures["test_auc_of_best"], base["test_auc_of_best"]
        figures["test_auc_diff"] = None if test is None or base_test is None else round(test - base_test, 4)
    return {
        "task": task.__dict__,
        "champion_val_auc": champion,
        "arms": arms,
        "spearman": {
            "early_epoch_rung_vs_final": spearman(studies["a_none"], studies["a_none"], 2),
            "low_resolution_rung_vs_final": spearman(studies["d_resolution"], studies["a_none"], 2),
        },
    }


def print_table(result: dict[str, Any]) -> None:
    task = result["task"]
    print(
        f"\n{task['name']}: {task['backbones']} · {task['image_size']} px · {2 * task['n_per_class']} images "
        f"({task['difficulty']}) · {task['epochs']} epochs · champion val AUC {result['champion_val_auc']}"
    )
    print(
        f"{'arm':<15}{'wall s':>9}{'ratio':>7}{'CPU s':>9}{'ratio':>7}{'Mpx-ep':>9}{'ratio':>7}"
        f"{'best val':>9}{'test':>8}{'to champ':>10}"
    )
    for name, a in result["arms"].items():
        print(
            f"{name:<15}{a['wall_s']:>9.1f}{a['wall_ratio']:>7.3f}{a['cpu_s']:>9.1f}{a['cpu_ratio']:>7.3f}"
            f"{a['pixel_epochs_m']:>9.3f}"
            f"{a['pixel_epochs_ratio']:>7.3f}{a['best_val_auc']:>9.4f}"
            f"{a['test_auc_of_best'] or float('nan'):>8.4f}"
            f"{a['s_to_champion'] if a['s_to_champion'] is not None else '-':>10}"
        )
    s = result["spearman"]
    print(
        f"Spearman vs final: early-epoch rung {s['early_epoch_rung_vs_final']}, "
        f"low-resolution rung {s['low_resolution_rung_vs_final']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="demo,hard", help="comma-separated: demo, hard")
    parser.add_argument("--trials", type=int, help="trials per arm (default: demo 6, hard 4; smoke 3)")
    parser.add_argument("--sampler", default="random", choices=["random", "tpe"])
    parser.add_argument("--fidelity-sizes", type=float, nargs="+", default=[0.5])
    parser.add_argument("--start-fraction", type=float, default=0.5, help="progressive resizing's first side")
    parser.add_argument(
        "--full-size-epoch", type=int, default=3, help="progressive resizing's first full epoch"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny CNN, 3 trials, few images: proves it runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    tasks = SMOKE if args.smoke else TASKS
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    unknown = [n for n in names if n not in tasks]
    if unknown:
        raise SystemExit(f"--tasks must name {sorted(tasks)}, but got {unknown}")

    sys.path.insert(0, str(REPO))
    work = Path(tempfile.mkdtemp(prefix="time-to-champion-"))
    results = [run_task(work, tasks[name], args) for name in names]
    load = os.getloadavg()
    result = {
        "trials": {name: args.trials or tasks[name].trials for name in names},
        "sampler": args.sampler,
        "fidelity_sizes": args.fidelity_sizes,
        "progressive": {"start_fraction": args.start_fraction, "full_size_epoch": args.full_size_epoch},
        "smoke": args.smoke,
        "load_average": [round(x, 2) for x in load],
        "cpus": os.cpu_count(),
        "tasks": results,
    }
    print(json.dumps(result, indent=2))
    for task_result in results:
        print_table(task_result)
    print(
        f"\nload average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs · "
        f"work folder {work}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
