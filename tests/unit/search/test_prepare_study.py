"""``clot-hpo prepare-study``, the defaults enqueued once, the study lock and the storage's pool."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml

from clot_hpo.cli import build_parser, main
from clot_hpo.config import load_config
from clot_hpo.search.defaults import DEFAULTS_ENQUEUED_ATTR, default_trials, enqueue_default_trials
from clot_hpo.search.storage import POOL_SIZE, open_storage, study_lock
from clot_hpo.search.study import prepare_study, resolve_spaces
from clot_hpo.search_space import default_search_space_path

TINY_SPACE = default_search_space_path("tiny_cnn")


def _config(folder: Path, data: Path, **search: object) -> Path:
    path = folder / "exp.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "prep",
                "data": {"path": str(data), "val_fraction": 0.25, "test_fraction": 0.25},
                "training": {"epochs": 1, "weights": "none"},
                "search": {
                    "backbones": ["tiny_cnn"],
                    "storage": f"sqlite:///{folder / 'optuna.db'}",
                    **search,
                },
            }
        )
    )
    return path


def test_defaults_are_enqueued_once_and_mark_the_study() -> None:
    study = optuna.create_study()
    spaces = {"tiny_cnn": TINY_SPACE}
    assert enqueue_default_trials(study, spaces) == default_trials(spaces)
    assert study.user_attrs[DEFAULTS_ENQUEUED_ATTR] == 1
    assert enqueue_default_trials(study, spaces) == []
    assert [t.state.name for t in study.trials] == ["WAITING"]


def test_a_prepared_study_is_not_enqueued_again_even_once_its_trials_are_gone() -> None:
    study = optuna.create_study()
    study.set_user_attr(DEFAULTS_ENQUEUED_ATTR, 1)
    assert enqueue_default_trials(study, {"tiny_cnn": TINY_SPACE}) == []
    assert study.trials == []


def test_the_check_and_the_enqueueing_happen_under_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers that all saw an empty study: the others, once they hold the lock, see the first's."""
    study = optuna.create_study()
    spaces = {"tiny_cnn": TINY_SPACE}
    read = study.get_trials

    def slow_read(*args: object, **kwargs: object) -> list[optuna.trial.FrozenTrial]:
        trials = read(*args, **kwargs)  # type: ignore[arg-type]
        time.sleep(0.1)  # a busy database: every thread sees the study empty without the lock
        return trials

    monkeypatch.setattr(study, "get_trials", slow_read)
    lock = threading.Lock()
    results: list[list[dict[str, object]]] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        results.append(enqueue_default_trials(study, spaces, lock=lock))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    assert len(study.trials) == 1


def test_the_sqlite_study_lock_excludes_another_holder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    order: list[str] = []
    held = threading.Event()

    def first() -> None:
        with study_lock(url, "s"):
            held.set()
            time.sleep(0.3)
            order.append("first released")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(5)
    with study_lock(url, "s"):
        order.append("second acquired")
    thread.join()
    assert order == ["first released", "second acquired"]


def test_a_fresh_sqlite_file_is_set_up_by_one_process_at_a_time(tmp_path: Path) -> None:
    # Optuna writes its tables, version row and Alembic stamp in steps; a second opener of a
    # fresh file between them failed ("cannot open"), so opening waits for the file's lock.
    import sqlite3

    db = tmp_path / "optuna.db"
    url = f"sqlite:///{db}"
    opened: list[object] = []
    with study_lock(url, "another worker"):
        thread = threading.Thread(target=lambda: opened.append(open_storage(url)))
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive() and not db.exists(), "opened while another process held the lock"
    thread.join(30)
    assert opened and not thread.is_alive()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM version_info").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


def test_a_database_server_storage_keeps_one_connection_and_a_trial_process_none() -> None:
    from sqlalchemy.pool import NullPool, QueuePool

    from clot_hpo.search.storage import _engine_kwargs  # the rule itself, no server needed

    pooled = _engine_kwargs("postgresql+psycopg2://u@db/optuna")
    assert pooled["pool_size"] == POOL_SIZE == 1 and pooled["pool_pre_ping"] is True
    assert _engine_kwargs("postgresql+psycopg2://u@db/optuna", pooled=False) == {"poolclass": NullPool}
    import sqlalchemy

    engine = sqlalchemy.create_engine("postgresql+psycopg2://u@db/optuna", **pooled)
    assert isinstance(engine.pool, QueuePool) and engine.pool.size() == 1
    engine.dispose()


def test_prepare_study_validates_creates_and_enqueues_once(tmp_path: Path, tiny_dataset: Path) -> None:
    config = load_config(_config(tmp_path, tiny_dataset))
    first = prepare_study(config, tracking=False)
    assert first.n_images == 80 and first.trials_on_record == 1
    assert first.enqueued == default_trials(resolve_spaces(config))
    again = prepare_study(config, tracking=False)
    assert again.enqueued == [] and again.trials_on_record == 1
    study = optuna.load_study(study_name="prep", storage=open_storage(config.search.storage))
    # The study records its objective, that its defaults are queued, and how it validates (cv_folds 0).
    assert study.user_attrs == {"objective": "val_auc", DEFAULTS_ENQUEUED_ATTR: 1, "cv_folds": 0}


def test_prepare_study_without_defaults_first_only_creates_the_study(
    tmp_path: Path, tiny_dataset: Path
) -> None:
    config = load_config(_config(tmp_path, tiny_dataset, defaults_first=False))
    assert prepare_study(config, tracking=False).trials_on_record == 0


def test_prepare_study_command_line(
    tmp_path: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, tiny_dataset)
    args = build_parser().parse_args(["prepare-study", str(config), "--study-name", "cli", "--no-tracking"])
    assert args.study_name == "cli" and args.no_tracking
    assert main(["prepare-study", str(config), "--study-name", "cli", "--no-tracking"]) == 0
    out = capsys.readouterr().out
    assert "enqueued 1 defaults trial(s)" in out and "80 images valid" in out
    assert main(["prepare-study", str(config), "--study-name", "cli", "--no-tracking"]) == 0
    assert "already prepared: nothing enqueued" in capsys.readouterr().out


def test_prepare_study_refuses_bad_data_with_one_line(
    tmp_path: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, tiny_dataset)
    code = main(["prepare-study", str(config), "--data", str(tmp_path / "missing"), "--no-tracking"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("clot-hpo: error:"), err
    assert "missing" in err[0]
    assert not (tmp_path / "optuna.db").exists() or not optuna.get_all_study_names(
        f"sqlite:///{tmp_path / 'optuna.db'}"
    ), "no study is created from bad data"
