"""Storage errors are recognised even behind the error Optuna raises while handling them."""

from __future__ import annotations

import sqlalchemy.exc

from clot_hpo.search.optuna_compat import storage_error


def _optuna_style_failure() -> BaseException:
    # What optuna's _run_trial does when the database goes away during tell
    # (https://github.com/optuna/optuna/issues/5280).
    try:
        try:
            raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, ConnectionError("refused"))
        finally:
            updated_state = None if False else updated_state  # noqa: F821, F841 - unbound on purpose
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("unreachable")


def test_found_behind_an_unbound_local_error() -> None:
    exc = _optuna_style_failure()
    assert isinstance(exc, UnboundLocalError)
    found = storage_error(exc, sqlalchemy.exc.OperationalError)
    assert isinstance(found, sqlalchemy.exc.OperationalError)


def test_other_errors_are_not_storage_errors() -> None:
    try:
        raise ValueError("a bug") from KeyError("k")
    except ValueError as exc:
        assert storage_error(exc, sqlalchemy.exc.OperationalError) is None


def test_an_outage_during_a_trial_does_not_run_another_trial() -> None:
    import io

    from rich.console import Console

    from clot_hpo.search.storage import call_retrying_storage

    calls = []

    def optimize_once() -> None:  # the trial ran; telling it failed with the database away
        calls.append(1)
        raise _optuna_style_failure()

    console = Console(file=io.StringIO())
    assert call_retrying_storage(optimize_once, console=console, rerun=False) is None
    assert calls == [1], "the loop must re-read the study and its budget before another trial"
    assert "storage unreachable" in console.file.getvalue()


def _commit_on_a_closed_connection() -> BaseException:
    # What Optuna's _create_scoped_session raises when PostgreSQL closed the connection
    # before a commit: the driver's InterfaceError inside an "invalid data" StorageInternalError.
    from optuna.exceptions import StorageInternalError

    try:
        try:
            raise sqlalchemy.exc.InterfaceError("COMMIT", {}, Exception("connection already closed"))
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise StorageInternalError("An exception is raised during the commit.") from exc
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("unreachable")


def test_a_commit_on_a_closed_connection_is_an_outage_and_is_retried() -> None:
    import io

    from rich.console import Console

    from clot_hpo.search.storage import call_retrying_storage, storage_outage

    assert isinstance(storage_outage(_commit_on_a_closed_connection()), sqlalchemy.exc.InterfaceError)
    calls = []

    def commit_once_then_work() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise _commit_on_a_closed_connection()
        return "done"

    console = Console(file=io.StringIO())
    assert call_retrying_storage(commit_once_then_work, console=console) == "done"
    assert len(calls) == 2
    assert "storage unreachable" in console.file.getvalue()


def test_invalid_data_is_not_an_outage() -> None:
    from clot_hpo.search.storage import storage_outage

    try:
        raise sqlalchemy.exc.DataError("INSERT", {}, Exception("value too long"))
    except sqlalchemy.exc.DataError as exc:
        assert storage_outage(exc) is None
