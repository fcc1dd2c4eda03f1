"""Links into the MLflow UI that open a study's runs and charts, not MLflow 3's GenAI overview.

MLflow 3's UI lands on its GenAI view (traces, an assistant panel) at ``http://HOST:PORT``
and on an experiment's page alike; the runs of the model-training view need
``#/experiments/<id>/runs?workflowType=machine_learning``. A study's link also names the
view the study stored (:mod:`clot_hpo.tracking.ui_view`: its trials listed under the study,
the objective per epoch, the parallel coordinates, the test metric with its interval) and
opens its charts. `make mlflow-server` and the demo print these links::

    python -m clot_hpo.tracking.ui_links [--store URI] [--server URL] [--experiment NAME]

prints ``NAME  URL`` for every clot-hpo experiment of the store (``--experiment``: that
experiment's URL alone, or exit 2 when it does not exist).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clot_hpo.tracking.store import DEFAULT_UI, MlflowClient, runs_url, sqlite_path
from clot_hpo.tracking.tags import TAG_EXPERIMENT, TAG_UI_VIEW, UI_VIEW_KEY
from clot_hpo.util import first_line

DEFAULT_STORE = "sqlite:///mlruns/mlflow.db"


def study_links(store: str, server: str = DEFAULT_UI) -> list[tuple[str, str]]:
    """``(experiment name, runs URL)`` of every active clot-hpo experiment in ``store``, by name.

    A SQLite store that does not exist yet has none (and is not created).
    """
    db = sqlite_path(store)
    if db is not None and not db.expanduser().exists():
        return []
    client = MlflowClient(tracking_uri=store)
    key, value = TAG_EXPERIMENT
    experiments = client.search_experiments(filter_string=f"tags.`{key}` = '{value}'", max_results=1000)
    return sorted((exp.name, _link(server, exp)) for exp in experiments)


def _link(server: str, experiment: object) -> str:
    tags = getattr(experiment, "tags", None) or {}
    view = UI_VIEW_KEY if TAG_UI_VIEW in tags else None  # the UI drops a link naming a missing view
    # The charts are the view's: without it the UI would draw one per metric, alphabetically.
    return runs_url(server, str(getattr(experiment, "experiment_id", "")), view=view, charts=view is not None)


def experiment_link(store: str, experiment: str, server: str = DEFAULT_UI) -> str | None:
    """The runs URL of ``experiment`` in ``store``, or None when it does not exist."""
    db = sqlite_path(store)
    if db is not None and not db.expanduser().exists():
        return None
    exp = MlflowClient(tracking_uri=store).get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage == "deleted":
        return None
    return _link(server, exp)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the links (see the module's docstring); exit 2 for a missing ``--experiment``."""
    parser = argparse.ArgumentParser(
        prog="python -m clot_hpo.tracking.ui_links", description=first_line(__doc__ or "")
    )
    parser.add_argument("--store", default=DEFAULT_STORE, help=f"MLflow store (default: {DEFAULT_STORE})")
    parser.add_argument("--server", default=DEFAULT_UI, help=f"the UI's address (default: {DEFAULT_UI})")
    parser.add_argument("--experiment", help="print this experiment's link only")
    args = parser.parse_args(argv)
    if args.experiment:
        link = experiment_link(args.store, args.experiment, args.server)
        if link is None:
            print(f"ui_links: no experiment {args.experiment!r} in {args.store}", file=sys.stderr)
            return 2
        print(link)
        return 0
    for name, link in study_links(args.store, args.server):
        print(f"{name}  {link}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
