"""The model card's facts gathered for a promoted version, and the card logged with it.

The study is read back through the one reader (:func:`clot_hpo.tracking.study_reader.read_study`);
the model file's parameter count, the model's pinned requirements, the verified test
predictions, the trial's ledger record and the gate's decision complete the facts, which
:mod:`clot_hpo.registry.card` turns into ``model_card.json`` and
:mod:`clot_hpo.registry.card_document` into ``model_card.md`` and the version's description.
"""

from __future__ import annotations

import logging
from pathlib import Path

from clot_hpo.errors import ConfigError
from clot_hpo.registry import card as cards
from clot_hpo.registry.artifacts import model_requirements
from clot_hpo.registry.candidates import PromotionCandidate
from clot_hpo.registry.card_document import render_markdown, summary_markdown
from clot_hpo.registry.gate import Evidence, GateDecision
from clot_hpo.registry.outcome import PromotionResult
from clot_hpo.tracking.store import MlflowClient, MlflowException
from clot_hpo.tracking.study_reader import FinishedStudy, read_study
from clot_hpo.tracking.tags import TAG_DIGEST, TAG_PARENT
from clot_hpo.util import first_line

log = logging.getLogger("clot_hpo.registry")


def _study_of(
    tracking_uri: str, experiment: str, best: PromotionCandidate, folder: Path
) -> FinishedStudy | None:
    """The candidate's study, read back (None: no parent run, or it cannot be read: the card says so)."""
    parent_id = best.run.data.tags.get(TAG_PARENT)
    if not parent_id:
        return None
    try:
        return read_study(tracking_uri, experiment, folder=folder, run_id=parent_id)
    except (ConfigError, MlflowException, OSError) as exc:
        log.warning("promote: the study run %s cannot be read for the card: %s", parent_id, first_line(exc))
        return None


def write_card(
    client: MlflowClient,
    tracking_uri: str,
    experiment: str,
    result: PromotionResult,
    best: PromotionCandidate,
    model_file: Path | None,
    evidence: Evidence | None,
    decision: GateDecision,
    work: Path,
) -> None:
    """Build the model card, log it to the version's run, and set the version's description."""
    run, entry = best.run, best.vouched
    card = cards.build_card(
        model_name=result.model_name,
        version=result.version,
        run=run,
        model_id=best.model_id,
        study=_study_of(tracking_uri, experiment, best, work / "parent"),
        trial_attrs=dict(entry.user_attrs or {}),
        model_sha256=entry.model_sha256,  # the ledger's (the version's tag is the same)
        parameter_count=cards.keras_parameter_count(model_file) if model_file is not None else None,
        requirements=model_requirements(client, tracking_uri, best.model_id, work / "env"),
        test_predictions=evidence.predictions if evidence is not None else None,
        decision=decision.tags(),
        dataset_digest=run.data.tags.get(TAG_DIGEST),
    )
    client.log_text(result.run_id, render_markdown(card), cards.CARD_MD)
    client.log_text(result.run_id, cards.card_json(card), cards.CARD_JSON)
    client.update_model_version(result.model_name, result.version, description=summary_markdown(card))
    result.messages.append(
        f"model card written: {cards.CARD_MD} and {cards.CARD_JSON} of run {result.run_id}"
    )


__all__ = ["write_card"]
