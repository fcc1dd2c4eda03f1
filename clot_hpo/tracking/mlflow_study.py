"""The study process's side of the MLflow tracker: the parent run and each trial's run.

One experiment per study, a parent run named after the study, one nested child run per
trial (``trial-<n>``). Status mapping (Optuna trial state -> MLflow run status):
``COMPLETE -> FINISHED``, ``PRUNED -> FINISHED``, ``FAIL -> FAILED``: the UI draws KILLED as
a failure, so a pruned trial's run ends FINISHED and is renamed ``trial-<n> (pruned at epoch
<e>)`` (:func:`~clot_hpo.tracking.ui_view.pruned_run_tags`). The Optuna state itself is kept
in the tag ``optuna.trial_state`` (what readers go by) and the reason of a failure or a
pruning in ``fail_reason``. As trials end, the parent run gets the headline metrics of
:mod:`clot_hpo.tracking.headline`; the experiment keeps the UI's view of the study
(:mod:`clot_hpo.tracking.ui_view`).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clot_hpo.tracking.base import TRIAL_STATES, StudyTracker, to_plain
from clot_hpo.tracking.headline import study_headline
from clot_hpo.tracking.mlflow_backend import MlflowBackend, now_ms
from clot_hpo.tracking.source import source_tags
from clot_hpo.tracking.store import (
    MAX_DIGEST_LENGTH,
    MAX_TAG_LENGTH,
    MlflowException,
    entities,
    is_not_found,
    quote,
    search_all_runs,
)
from clot_hpo.tracking.tags import (
    DIRECTIONS,
    ROLE_STUDY,
    ROLE_TRIAL,
    TAG_DIGEST,
    TAG_DIRECTION,
    TAG_FAIL_REASON,
    TAG_HEADLINE,
    TAG_OBJECTIVE,
    TAG_OPTUNA_STUDY,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STUDY,
    TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE,
    TAG_UI_VIEW,
)
from clot_hpo.tracking.ui_view import pruned_run_tags, searched_parameters, ui_view_state
from clot_hpo.util import finite_float, redact_secrets, redact_text

log = logging.getLogger("clot_hpo.tracking")


# Optuna trial state -> MLflow run status (a pruned trial ended as the study asked: the UI
# draws KILLED as a failure). Readers go by the tag ``optuna.trial_state``.
STATUS_OF_STATE = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
RUN_END_STATUSES = ("FINISHED", "FAILED", "KILLED")


class MlflowStudyTracker(MlflowBackend, StudyTracker):
    """What the study process records in MLflow (see :class:`~clot_hpo.tracking.base.StudyTracker`).

    Takes :class:`~clot_hpo.tracking.mlflow_backend.MlflowBackend`'s arguments.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parent_run_id: str | None = None
        self.study_name: str | None = None
        self.dataset_digest: str | None = None
        self.objective: str | None = None  # the metric the study optimizes (start_study)
        self.direction: str | None = None  # Optuna's direction for it
        self.headline: tuple[str, ...] = ()  # the best trial's metrics the parent shows
        self.searched: dict[str, list[str]] = {}  # the UI's parallel-coordinates charts (ui_view)

    def start_study(
        self,
        study_name: str,
        *,
        tags: dict[str, str] | None = None,
        objective: str | None = None,
        direction: str | None = None,
        headline: Sequence[str] = (),
        run_id: str | None = None,
    ) -> str:
        """Open the study's parent run, or reopen it on resume.

        Reopened on resume: ``run_id`` (the run the Optuna storage records for the study) when
        it is this study's run in this experiment, else the latest run tagged as the study's.
        Workers of one study call this one at a time (``search.study.open_study_run``), so the
        first creates the run and the others reopen it.

        ``objective`` (the metric trial runs log, e.g. ``val_auc``) and ``direction``
        (Optuna's, ``"maximize"`` or ``"minimize"``) are recorded as the run's tags
        ``clot_hpo.objective`` and ``optuna.direction``: `promote` ranks trials by them, and
        the run's headline metrics name the best trial by them, and copy its ``headline``
        metrics (``clot_hpo.headline``). On resume without them, the ones the run recorded are used.
        """
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"`direction` must be one of {list(DIRECTIONS)}, but got {direction!r}")
        self.study_name = study_name
        self.objective, self.direction = objective or self.objective, direction or self.direction
        self.headline = tuple(headline) or self.headline
        extra = {
            TAG_OBJECTIVE: self.objective,
            TAG_DIRECTION: self.direction,
            TAG_HEADLINE: ",".join(self.headline),
        }
        all_tags = {**(tags or {}), **{k: v for k, v in extra.items() if v}}
        opened = self._call(
            f"start the study run of {study_name!r}",
            self._start_study,
            study_name,
            all_tags,
            run_id,
            default="",
        )
        self.parent_run_id = opened or None
        self._store_ui_view()
        return str(opened)

    def _store_ui_view(self) -> None:
        """Store the view the link `make mlflow-server` prints opens (see ``ui_view``)."""
        if self.parent_run_id and self._experiment_id:
            self._call(
                "store the UI's view of the study",
                self.client.set_experiment_tag,
                self._experiment_id,
                TAG_UI_VIEW,
                ui_view_state(self.objective, self.headline, direction=self.direction, params=self.searched),
            )

    def _start_study(self, study_name: str, tags: dict[str, str], run_id: str | None) -> str:
        exp_id = self._get_or_create_experiment()
        all_tags = {k: str(v)[:MAX_TAG_LENGTH] for k, v in {**source_tags(), **tags}.items()}
        all_tags.update({TAG_ROLE: ROLE_STUDY, TAG_STUDY: study_name, TAG_OPTUNA_STUDY: study_name})
        recorded = self._study_run(exp_id, study_name, run_id) if run_id else None
        if recorded is not None:
            return self._reopen_study(recorded, all_tags)
        study_filter = f"tags.`{TAG_ROLE}` = '{ROLE_STUDY}' and tags.`{TAG_STUDY}` = {quote(study_name)}"
        found = self.client.search_runs(
            [exp_id], filter_string=study_filter, max_results=1, order_by=["attributes.start_time DESC"]
        )
        if found:
            return self._reopen_study(found[0], all_tags)
        run = self.client.create_run(exp_id, run_name=study_name, tags=all_tags)
        log.info(
            "tracking: study run %s of %r in experiment %r at %s",
            run.info.run_id,
            study_name,
            self.experiment_name,
            self.tracking_uri,
        )
        return str(run.info.run_id)

    def _study_run(self, exp_id: str, study_name: str, run_id: str) -> Any | None:
        """Run ``run_id`` if it is ``study_name``'s live study run in experiment ``exp_id``; else None.

        Not found is None (the study's storage may name a run of another tracking server);
        any other error propagates, to be retried.
        """
        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            if is_not_found(exc):
                return None
            raise
        tags = run.data.tags
        if (
            run.info.experiment_id != exp_id
            or run.info.lifecycle_stage != "active"
            or tags.get(TAG_ROLE) != ROLE_STUDY
            or tags.get(TAG_STUDY) != study_name
        ):
            log.warning(
                "tracking: run %s, which the Optuna storage records for study %r, is not its live "
                "study run in experiment %r; finding it by its tags instead",
                run_id,
                study_name,
                self.experiment_name,
            )
            return None
        return run

    def _reopen_study(self, run: Any, tags: dict[str, str]) -> str:
        """Resume: the parent run is RUNNING again, and what it recorded fills what this process lacks."""
        run_id = str(run.info.run_id)
        self.client.update_run(run_id, status="RUNNING")
        self.client.log_batch(run_id, tags=[entities.RunTag(k, v) for k, v in tags.items()])
        recorded = run.data.tags
        self.dataset_digest = self.dataset_digest or recorded.get(TAG_DIGEST)
        self.objective = self.objective or recorded.get(TAG_OBJECTIVE)
        self.direction = self.direction or recorded.get(TAG_DIRECTION)
        self.headline = self.headline or tuple(k for k in recorded.get(TAG_HEADLINE, "").split(",") if k)
        log.info(
            "tracking: resumed study run %s of %r in experiment %r",
            run_id,
            tags[TAG_STUDY],
            self.experiment_name,
        )
        return run_id

    def log_study_inputs(
        self,
        *,
        config: dict[str, Any],
        search_spaces: dict[str, Any],
        manifest_path: Path | None,
        dataset_digest: str | None,
    ) -> None:
        """Attach ``config.yaml``, ``search_spaces/*.yaml``, the split manifest and data report, the dataset.

        The dataset is logged as an MLflow dataset input built from the manifest (paths,
        labels, groups, splits: never pixels); its digest is cut to MLflow's 36 characters,
        and the full digest is the run tag ``clot_hpo.dataset_digest``.
        """
        run_id = self.parent_run_id
        if not run_id:
            return
        if dataset_digest:
            self.dataset_digest = dataset_digest
            self._call("tag the dataset digest", self.client.set_tag, run_id, TAG_DIGEST, dataset_digest)
        # Passwords in the storage and tracking URLs never reach the tracking server.
        self._call(
            "log config.yaml", self.client.log_dict, run_id, redact_secrets(to_plain(config)), "config.yaml"
        )
        for name, space in (search_spaces or {}).items():
            self._log_search_space(run_id, str(name), space)
        self.searched = searched_parameters(search_spaces or {})
        if self.searched:  # the parallel-coordinates chart of the UI's view draws them
            self._store_ui_view()
        if manifest_path is not None:
            manifest_path = Path(manifest_path)
            self._call(
                f"log the split manifest {manifest_path}",
                self.client.log_artifact,
                run_id,
                str(manifest_path),
                "data",
            )
            # The data report `prepare_data` wrote beside the manifest (counts, grouping, leakage):
            # `clot-hpo report` reads it from here.
            data_report = manifest_path.with_name("data_report.json")
            if data_report.is_file():
                self._call("log the data report", self.client.log_artifact, run_id, str(data_report), "data")
            self._call(
                "log the dataset input", self._log_dataset, run_id, manifest_path, dataset_digest, config
            )

    def _log_search_space(self, run_id: str, name: str, space: Any) -> None:
        stem = Path(name).name
        stem = stem.rsplit(".", 1)[0] if stem.endswith((".yaml", ".yml")) else stem
        if isinstance(space, (str, Path)) and Path(space).is_file():
            with tempfile.TemporaryDirectory() as tmp:
                dst = Path(tmp) / f"{stem}.yaml"
                dst.write_bytes(Path(space).read_bytes())
                self._call(
                    f"log search space {stem}", self.client.log_artifact, run_id, str(dst), "search_spaces"
                )
        else:
            self._call(
                f"log search space {stem}",
                self.client.log_dict,
                run_id,
                to_plain(space),
                f"search_spaces/{stem}.yaml",
            )

    def _log_dataset(self, run_id: str, manifest: Path, digest: str | None, config: dict[str, Any]) -> None:
        import pandas as pd

        df = pd.read_csv(manifest)
        data_path = (config.get("data") or {}).get("path") if isinstance(config, dict) else None
        name = Path(str(data_path)).name if data_path else manifest.stem
        tracking = (config.get("tracking") or {}) if isinstance(config, dict) else {}
        # By default the dataset names no path (tracking.log_manifest: keys, docs/tracking.md): its
        # source is the manifest artifact logged beside it.
        full = tracking.get("log_manifest") == "full"
        source = str(data_path or manifest) if full else f"data/{manifest.name}"
        targets = "label" if "label" in df.columns else None
        from mlflow.data.pandas_dataset import from_pandas

        with warnings.catch_warnings():
            # Schema hints about integer columns and source ambiguity: irrelevant for a manifest.
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_pandas(
                df,
                source=source,
                targets=targets,
                name=name,
                digest=(digest or None) and digest[:MAX_DIGEST_LENGTH],
            )
            entity = dataset._to_mlflow_entity()  # the schema is inferred here
        context = entities.InputTag("mlflow.data.context", "training")
        self.client.log_inputs(run_id, datasets=[entities.DatasetInput(entity, tags=[context])])

    def start_trial(self, trial_number: int, *, tags: dict[str, str] | None = None) -> str:
        """Open ``trial-<n>`` under the study run (the same run again if it already exists)."""
        return str(
            self._call(
                f"start the run of trial {trial_number}",
                self._start_trial,
                int(trial_number),
                dict(tags or {}),
                default="",
            )
        )

    def _start_trial(self, number: int, tags: dict[str, str]) -> str:
        exp_id = self._get_or_create_experiment()
        study = self.study_name or self.experiment_name
        all_tags = {
            **{k: str(v)[:MAX_TAG_LENGTH] for k, v in {**source_tags(), **tags}.items()},
            TAG_ROLE: ROLE_TRIAL,
            TAG_STUDY: study,
            TAG_OPTUNA_STUDY: study,
            TAG_TRIAL_NUMBER: str(number),
        }
        if self.parent_run_id:
            all_tags[TAG_PARENT] = self.parent_run_id
            existing = self.client.search_runs(
                [exp_id],
                filter_string=(
                    f"tags.`{TAG_PARENT}` = {quote(self.parent_run_id)} and "
                    f"tags.`{TAG_TRIAL_NUMBER}` = '{number}'"
                ),
                max_results=1,
            )
            if existing:
                run_id = existing[0].info.run_id
                self.client.update_run(run_id, status="RUNNING")
                return str(run_id)
        if self.dataset_digest:
            all_tags[TAG_DIGEST] = self.dataset_digest
        run = self.client.create_run(exp_id, run_name=f"trial-{number}", tags=all_tags)
        return str(run.info.run_id)

    def end_trial(
        self,
        run_id: str,
        state: str,
        *,
        reason: str | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        """Close a trial's run: ``COMPLETE``, ``PRUNED`` -> FINISHED (a pruned one so named), FAIL -> FAILED.

        ``attrs`` (e.g. Optuna user attributes) become metrics when they are finite numbers
        and tags otherwise.
        """
        if state not in TRIAL_STATES:
            raise ValueError(f"`state` must be one of {list(TRIAL_STATES)}, but got {state!r}")
        if not run_id:
            return
        self._end_run(run_id, state, reason, attrs)
        self._call("update the study run's headline metrics", self._log_headline)

    def _end_run(self, run_id: str, state: str, reason: str | None, attrs: dict[str, Any] | None) -> None:
        tags = [entities.RunTag(TAG_TRIAL_STATE, state)]
        said = redact_text(str(reason))[:MAX_TAG_LENGTH] if reason else None
        if said:
            tags.append(entities.RunTag(TAG_FAIL_REASON, said))
        if state == "PRUNED":  # FINISHED, renamed "trial-<n> (pruned at epoch <e>)", described
            tags.extend(self._pruned_tags(run_id, said))
        metrics = []
        ts = now_ms()
        for key, value in (attrs or {}).items():
            number = finite_float(value)
            if number is not None:
                metrics.append(entities.Metric(str(key), number, ts, 0))
            else:
                tags.append(entities.RunTag(str(key), redact_text(str(value))[:MAX_TAG_LENGTH]))
        self._call(f"tag the end of run {run_id}", self.client.log_batch, run_id, metrics=metrics, tags=tags)
        self._call(
            f"end run {run_id} as {STATUS_OF_STATE[state]}",
            self.client.set_terminated,
            run_id,
            STATUS_OF_STATE[state],
        )

    def _pruned_tags(self, run_id: str, reason: str | None) -> list[Any]:
        """The run's name, description and stop epoch as a pruned trial (``ui_view.pruned_run_tags``)."""
        run = self._call(f"read run {run_id}", self.client.get_run, run_id, default=None)
        number = run.data.tags.get(TAG_TRIAL_NUMBER, "") if run is not None else ""
        tags = pruned_run_tags(int(number) if number.isdigit() else None, self._last_epoch_of(run_id), reason)
        return [entities.RunTag(key, value[:MAX_TAG_LENGTH]) for key, value in tags.items()]

    def _last_epoch_of(self, run_id: str) -> int | None:
        """The last epoch (from 1) a trial's run logged its objective at: 0 for none, None when unknown."""
        if not self.objective:
            return None
        history = self._call(
            f"read the {self.objective} history of run {run_id}",
            self.client.get_metric_history,
            run_id,
            self.objective,
            default=None,
        )
        if history is None:
            return None
        return max((int(metric.step) + 1 for metric in history), default=0)

    def close_orphaned_trials(
        self, *, only: set[int] | None = None, reason: str = "the study process ended before this trial did"
    ) -> list[int]:
        """End the study's child runs still RUNNING (a crash left them) as FAILED.

        ``only``: the trial numbers whose trials are over (Optuna says so), when other workers
        of a shared study may be running the rest, or may start a trial (and its run) at any
        moment. None: every run still RUNNING. Returns the trial numbers closed.
        """
        if not self.parent_run_id:
            return []
        exp_id = self._call("find the experiment", self._get_or_create_experiment)
        if exp_id is None:
            return []
        runs = self._call(
            "find orphaned trial runs",
            self.client.search_runs,
            [exp_id],
            filter_string=(
                f"tags.`{TAG_PARENT}` = {quote(self.parent_run_id)} and attributes.status = 'RUNNING'"
            ),
            max_results=1000,
            default=[],
        )
        closed = []
        for run in runs:
            number = run.data.tags.get(TAG_TRIAL_NUMBER)
            if only is not None and (number is None or int(number) not in only):
                continue
            self._end_run(run.info.run_id, "FAIL", reason, None)
            if number is not None:
                closed.append(int(number))
        if runs:
            self._call("update the study run's headline metrics", self._log_headline)
        return sorted(closed)

    def _log_headline(self) -> None:
        """Log the study's best trial and trial counts on its parent run (see ``headline``)."""
        if not self.parent_run_id:
            return
        exp_id = self._get_or_create_experiment()
        # Stamped when the runs are read, not when the result is logged: of two workers logging
        # at once, MLflow shows the later stamp, which is the one that read more finished trials.
        ts = now_ms()
        children = search_all_runs(self.client, exp_id, f"tags.`{TAG_PARENT}` = {quote(self.parent_run_id)}")
        headline = study_headline(
            children, objective=self.objective, direction=self.direction, headline=self.headline
        )
        metrics = [entities.Metric(k, v, ts, 0) for k, v in headline.items()]
        self.client.log_batch(self.parent_run_id, metrics=metrics)

    def log_study_summary(self, trials_csv: Path, figures: dict[str, Any]) -> None:
        """Attach the all-trials CSV and Optuna's figures (matplotlib Figures or Axes)."""
        run_id = self.parent_run_id
        if run_id and trials_csv is not None and Path(trials_csv).is_file():
            self._call("log the trials CSV", self.client.log_artifact, run_id, str(trials_csv))
        self._log_figures(run_id, figures, folder="")

    def end_study(self, status: str = "FINISHED") -> None:
        """Close the parent run (``FINISHED``, ``FAILED`` or ``KILLED`` when interrupted)."""
        if status not in RUN_END_STATUSES:
            raise ValueError(f"`status` must be one of {list(RUN_END_STATUSES)}, but got {status!r}")
        if self.parent_run_id:
            self._call(
                f"end the study run as {status}", self.client.set_terminated, self.parent_run_id, status
            )
