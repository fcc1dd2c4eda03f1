"""The gate's decision for a registered version: taken once, recorded on the version, acted on.

Under the promotion lock, the champion is re-read; a decision already recorded against the
same champion under the same rule stands (a rerun changes nothing); otherwise the gate
(:mod:`clot_hpo.registry.gate`) decides on the verified test predictions, the decision is
recorded as the version's tags, the alias moves if it says so, and the model card is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clot_hpo.errors import ConfigError, DataError
from clot_hpo.registry.artifacts import TEST_PREDICTIONS
from clot_hpo.registry.candidates import PromotionCandidate
from clot_hpo.registry.card_writer import write_card
from clot_hpo.registry.gate import FIRST, PROMOTED, REFUSED, Evidence, GateDecision, GateRule, decide
from clot_hpo.registry.models import alias_version
from clot_hpo.registry.outcome import PromotionResult
from clot_hpo.registry.verification import VerifiedFiles
from clot_hpo.tracking.store import MlflowClient
from clot_hpo.tracking.tags import (
    TAG_DIGEST,
    TAG_GATE_CHAMPION,
    TAG_GATE_DECISION,
    TAG_GATE_REASON,
    TAG_GATE_RULE,
    TAG_THRESHOLD,
)
from clot_hpo.util import finite_float


def _threshold(run: Any) -> float:
    value = finite_float(run.data.metrics.get("threshold"))
    if value is None:
        value = finite_float(run.data.tags.get(TAG_THRESHOLD))
    return 0.5 if value is None else value


def _evidence(version: Any, run: Any, path: Path | None, who: str) -> Evidence:
    """A version's test predictions (``path``, verified against its trial), threshold and digest.

    Raises:
        ConfigError: the run has no ``test_predictions.csv`` (exit code 2).
        DataError: the file is malformed (exit code 2, naming it).
    """
    from clot_hpo.evaluate.paired import read_predictions  # heavy: only when a promotion needs it

    if path is None:
        raise ConfigError(
            f"{who} (version {version.version}, run {run.info.run_id}) has no {TEST_PREDICTIONS} artifact: "
            "the gate compares models on their test predictions, so it cannot decide"
        )
    try:
        frame = read_predictions(path)
    except DataError as exc:
        raise DataError(f"{who} run {run.info.run_id}: {exc}") from exc
    digest = run.data.tags.get(TAG_DIGEST) or (version.tags or {}).get("dataset_digest")
    return Evidence(version=str(version.version), predictions=frame, threshold=_threshold(run), digest=digest)


def _recorded_decision(version: Any, current: Any | None, rule: GateRule) -> str | None:
    """The decision already recorded against the current champion under the same rule, if any."""
    tags = version.tags or {}
    compared = tags.get(TAG_GATE_CHAMPION)
    now = str(current.version) if current is not None else "none"
    if tags.get(TAG_GATE_DECISION) and compared == now and tags.get(TAG_GATE_RULE) == rule.describe():
        return str(tags[TAG_GATE_DECISION])
    return None


class DecisionRecorder:
    """Takes the gate's decision for the registered candidate and records it (under the lock)."""

    def __init__(
        self,
        client: MlflowClient,
        tracking_uri: str,
        experiment: str,
        best: PromotionCandidate,
        result: PromotionResult,
        rule: GateRule,
        model_file: Path | None,
        work: Path,
    ) -> None:
        """Keep what deciding and writing the card need."""
        self.client, self.tracking_uri, self.experiment = client, tracking_uri, experiment
        self.best, self.result, self.rule = best, result, rule
        self.model_file, self.work = model_file, work

    def decide(self, verified: VerifiedFiles) -> None:
        """Re-read the champion, let the gate decide (or keep the recorded decision), record it."""
        client, result, rule = self.client, self.result, self.rule
        name, alias, say = result.model_name, result.alias, result.messages.append
        version = client.get_model_version(name, result.version)
        current = alias_version(client, name, alias)  # re-read under the lock
        if current is not None and str(current.version) == result.version:
            result.previous_version, result.previous_value = result.version, result.value
            result.decision = (version.tags or {}).get(TAG_GATE_DECISION)
            say(f"alias {alias!r} already points to version {result.version}: nothing to move")
            return
        result.previous_version = str(current.version) if current is not None else None
        recorded = _recorded_decision(version, current, rule)
        if recorded is not None:
            self._keep(recorded, (version.tags or {}).get(TAG_GATE_REASON, ""))
            return
        floors = rule.min_sensitivity is not None or rule.max_ece is not None
        if current is None and not floors and verified.candidate_test is None:
            # Nothing to compare with and no floor to check: a run from before trials kept their
            # predictions can still become the first champion (its card says what is missing).
            self._record(
                GateDecision(FIRST, rule.metric, None, "there was no champion", rule.describe()), None, None
            )
            return
        candidate = _evidence(version, self.best.run, verified.candidate_test, "the candidate")
        champion = None
        if current is not None:
            champ_run, champ_test = verified.champion(name, current)
            champion = _evidence(current, champ_run, champ_test, f"champion version {current.version}")
        self._record(decide(candidate, champion, rule), candidate, current)

    def _keep(self, recorded: str, reason: str) -> None:
        """A decision recorded earlier against the same champion and rule stands."""
        result, say = self.result, self.result.messages.append
        result.decision = recorded
        if recorded in (FIRST, PROMOTED):
            # Recorded as moving but the alias is elsewhere: a promotion interrupted between
            # its tags and the alias (or an alias removed by hand). Finish it.
            self.client.set_registered_model_alias(result.model_name, result.alias, result.version)
            result.alias_moved = True
            moved = f"alias {result.alias!r} set to it"
            say(f"gate: version {result.version} {recorded} (recorded earlier): {moved}")
            return
        say(f"gate: version {result.version} {recorded} (recorded earlier, nothing changed): {reason}")
        if recorded == REFUSED:
            raise ConfigError(f"promotion refused: {reason}")

    def _record(self, decision: GateDecision, candidate: Evidence | None, current: Any | None) -> None:
        """Record the decision on the version, move the alias if it says so, write the card, say it."""
        client, result = self.client, self.result
        name, alias, say = result.model_name, result.alias, result.messages.append
        for key, value in decision.tags().items():
            client.set_model_version_tag(name, result.version, key, value)
        result.decision, result.decided_now = decision.decision, True
        if decision.moves:
            client.set_registered_model_alias(name, alias, result.version)
            result.alias_moved = True
        write_card(
            client,
            self.tracking_uri,
            self.experiment,
            result,
            self.best,
            self.model_file,
            candidate,
            decision,
            self.work,
        )
        say(decision.line(result.version))
        if decision.moves:
            were = f"from version {current.version}" if current is not None else "(there was no champion)"
            say(f"alias {alias!r} moved {were} to version {result.version}")
        else:
            held = f"version {current.version}" if current is not None else "nobody"
            say(f"alias {alias!r} stays on {held}")
        if decision.decision == REFUSED:
            raise ConfigError(f"promotion refused: {decision.reason}")


__all__ = ["DecisionRecorder"]
