"""Promotion: register an experiment's best real trial, write its model card, and move the alias on proof.

:func:`promote`:

1. keeps only trial runs that a COMPLETE trial of the Optuna storage names (same study,
   trial number, run id, parent run, dataset digest:
   :mod:`clot_hpo.registry.verification`): a run injected
   into the MLflow server is refused;
2. ranks them by the metric their study optimized, in the direction the study recorded (the
   parent run's tags ``clot_hpo.objective`` and ``optuna.direction``), by the values the
   Optuna storage records, never the tracking server's: a run whose metric differs from its
   trial's is refused with exit code 2 (the mirror was changed);
3. checks the best one's files against the sha256 its trial recorded (the model file,
   ``val_predictions.csv``, ``test_predictions.csv``), and the champion's test predictions
   against its own trial's, before anything is registered: any difference is refused with
   exit code 2, naming the trial (docs/security.md);
4. under the registry's promotion lock (:mod:`clot_hpo.registry.lock`), registers the best
   one (once per run) with the model sha256 its trial recorded, re-reads the champion, and
   lets the gate (:mod:`clot_hpo.registry.gate`) decide on the verified test predictions
   whether the alias moves; the decision is recorded on the version as tags, and the model
   card (:mod:`clot_hpo.registry.card`) as the run's artifacts and the version's description.

Each step has its module: :mod:`~clot_hpo.registry.candidates` (the metric, its direction,
the ranking), :mod:`~clot_hpo.registry.verification` (the ledger's check and the files'
sha256), :mod:`~clot_hpo.registry.artifacts` (downloads), :mod:`~clot_hpo.registry.registration`,
:mod:`~clot_hpo.registry.decision` (the gate's decision, recorded) and
:mod:`~clot_hpo.registry.card_writer` (the card's facts, the study read back through
:func:`clot_hpo.tracking.study_reader.read_study`).

Rerunning it changes nothing: a version whose decision was taken against the current
champion under the same rule is not decided again. Registry stages are deprecated in
MLflow: aliases only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clot_hpo.errors import ConfigError
from clot_hpo.registry.candidates import (
    PromotionCandidate,
    choose_best,
    finished_candidates,
    recorded_objectives,
    resolve_direction,
)
from clot_hpo.registry.decision import DecisionRecorder
from clot_hpo.registry.gate import GateRule
from clot_hpo.registry.lock import promotion_lock
from clot_hpo.registry.models import DEFAULT_ALIAS, DEFAULT_MODEL_NAME, alias_version
from clot_hpo.registry.outcome import PromotionResult
from clot_hpo.registry.registration import register
from clot_hpo.registry.verification import VerifiedFiles, verify_outputs, vouch
from clot_hpo.tracking.store import global_tracking_uri, open_client
from clot_hpo.tracking.study_reader import Ledger, find_experiment
from clot_hpo.tracking.tags import TAG_STUDY

MAX_LISTED_REFUSALS = 5


def _no_candidate(experiment: str, metric: str, n_finished: int, refusals: list[str]) -> ConfigError:
    detail = "; ".join(refusals[:MAX_LISTED_REFUSALS])
    return ConfigError(
        f"experiment {experiment!r} has no finished trial with metric {metric!r} and a logged "
        f"model that the Optuna storage vouches for ({n_finished} finished trial "
        f"run{'s' if n_finished != 1 else ''}" + (f"; refused: {detail}" if detail else "") + ")"
    )


def _result(best: PromotionCandidate, experiment: str, refusals: list[str], **names: Any) -> PromotionResult:
    """The result so far: the chosen trial, and the runs refused on the way, in words."""
    result = PromotionResult(
        version="",
        run_id=best.run.info.run_id,
        value=best.value,
        study=best.run.data.tags.get(TAG_STUDY),
        trial_number=best.trial_number,
        **names,
    )
    for refusal in refusals[:MAX_LISTED_REFUSALS]:
        result.messages.append(f"refused (not a trial of the Optuna storage): {refusal}")
    better = "higher" if result.direction == "maximize" else "lower"
    result.messages.append(
        f"best trial: {result.trial_number} of {experiment!r} ({result.metric} = {best.value:.4f}, "
        f"{better} is better as the study recorded; run {result.run_id})"
    )
    return result


def promote(
    tracking_uri: str,
    experiment: str,
    *,
    ledger: Ledger,
    model_name: str = DEFAULT_MODEL_NAME,
    alias: str = DEFAULT_ALIAS,
    metric: str | None = None,
    direction: str | None = None,
    rule: GateRule | None = None,
    lock_timeout_s: float = 300.0,
    on_wait: Callable[[str], None] | None = None,
) -> PromotionResult:
    """Register the experiment's best real trial and move ``alias`` to it if the gate says so.

    The best trial is the FINISHED child run with a finite ``metric`` and a logged model,
    ranked in the direction its study recorded (ties go to the lower trial number), among
    runs that ``ledger`` vouches for (:func:`~clot_hpo.registry.verification.verify_trial`).
    ``metric`` defaults to the study's objective; ``direction`` is needed only for a metric
    no study recorded. The alias moves only when ``rule`` (default: the AUC's paired 95%
    interval above zero) holds against the current champion; the decision is recorded on the
    version either way.

    Raises:
        ConfigError: the experiment does not exist, the metric's direction cannot be told,
            no real finished trial has the metric and a logged model, the evidence is
            missing, the test sets differ (without ``allow_different_test_sets``; the
            decision is recorded first), or the lock stayed taken.
    """
    rule = rule or GateRule()
    client = open_client(tracking_uri)
    # MLflow's SQL registry store resolves `models:/<model_id>` sources through a client built
    # from the process-wide tracking URI, so that URI must be ours during the promotion.
    with global_tracking_uri(tracking_uri), tempfile.TemporaryDirectory(prefix="clot-promote-") as tmp:
        work = Path(tmp)
        exp_id = str(find_experiment(client, tracking_uri, experiment).experiment_id)
        objectives = recorded_objectives(client, exp_id)
        metric, direction = resolve_direction(objectives, experiment, metric, direction)
        candidates, n_finished = finished_candidates(client, exp_id, metric, direction)
        vouched, refusals = vouch(candidates, ledger, metric, objectives)
        best = choose_best(client, vouched, direction)
        if best is None:
            raise _no_candidate(experiment, metric, n_finished, refusals)
        result = _result(
            best, experiment, refusals, model_name=model_name, alias=alias, metric=metric, direction=direction
        )
        # Everything checked before anything is registered: the candidate's files, and the
        # champion's test predictions (checked again under the lock if the champion changed).
        model_file, test_file = verify_outputs(client, tracking_uri, best, work)
        verified = VerifiedFiles(client, ledger, work, candidate_test=test_file)
        current = alias_version(client, model_name, alias)
        if current is not None and str(current.run_id) != result.run_id:
            verified.champion(model_name, current)
        with promotion_lock(client, model_name, timeout_s=lock_timeout_s, on_wait=on_wait):
            register(client, best, experiment, result)
            DecisionRecorder(client, tracking_uri, experiment, best, result, rule, model_file, work).decide(
                verified
            )
        return result


__all__ = ["MAX_LISTED_REFUSALS", "PromotionResult", "promote"]
