"""Storage errors are recognised even behind the error Optuna raises while handling them."""

from __future__ import annotations

import sqlalchemy.exc

from clot_hpo.search.study import _storage_error


def _optuna_style_failure() -> BaseException:
    # What optuna's _run_trial does when the database goes away during tell
    # (https://github.com/optuna/optuna/issues/5280).
    try:
        try:
            raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, ConnectionError("refused"))
        finally:
            updated_state = None if False else updated_state  # noqa: F821 - unbound on purpose
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("unreachable")


def test_found_behind_an_unbound_local_error() -> None:
    exc = _optuna_style_failure()
    assert isinstance(exc, UnboundLocalError)
    found = _storage_error(exc, sqlalchemy.exc.OperationalError)
    assert isinstance(found, sqlalchemy.exc.OperationalError)


def test_other_errors_are_not_storage_errors() -> None:
    try:
        raise ValueError("a bug") from KeyError("k")
    except ValueError as exc:
        assert _storage_error(exc, sqlalchemy.exc.OperationalError) is None
