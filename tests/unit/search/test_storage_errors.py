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
