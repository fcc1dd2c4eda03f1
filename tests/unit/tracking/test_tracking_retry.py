"""Retry with backoff: transient failures are retried, permanent ones reported at once."""

from __future__ import annotations

import logging

import pytest
from mlflow.exceptions import MlflowException

from clot_hpo.tracking.retry import call_with_retry, is_transient


def test_transient_failures_are_retried_until_success(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("server restarting")
        return "ok"

    with caplog.at_level(logging.WARNING, logger="clot_hpo.tracking"):
        assert call_with_retry("log something", flaky, tries=4, backoff_s=0.001) == "ok"
    assert len(calls) == 3
    assert not caplog.records


def test_giving_up_returns_the_default_and_warns_with_the_uri(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def down() -> None:
        calls.append(1)
        raise ConnectionError("connection refused")

    with caplog.at_level(logging.WARNING, logger="clot_hpo.tracking"):
        out = call_with_retry(
            "log epoch 3", down, tries=3, backoff_s=0.001, default="fallback", where="http://127.0.0.1:9"
        )
    assert out == "fallback" and len(calls) == 3
    [record] = caplog.records
    assert "log epoch 3" in record.getMessage() and "http://127.0.0.1:9" in record.getMessage()
    assert "3 attempts" in record.getMessage() and "connection refused" in record.getMessage()


def test_permanent_errors_are_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def invalid() -> None:
        calls.append(1)
        raise MlflowException.invalid_parameter_value("bad param")

    with caplog.at_level(logging.WARNING, logger="clot_hpo.tracking"):
        assert call_with_retry("log params", invalid, tries=5, backoff_s=0.001) is None
    assert len(calls) == 1 and len(caplog.records) == 1


def test_is_transient() -> None:
    assert is_transient(ConnectionError())
    assert is_transient(MlflowException("boom"))  # INTERNAL_ERROR: maybe a restarting server
    assert not is_transient(MlflowException.invalid_parameter_value("bad"))
    assert not is_transient(TypeError("bug"))


def test_a_missing_local_file_is_not_retried() -> None:
    # Finding (issue 12, item 5): uploading a spooled model whose file was gone was retried
    # like a network error (7 tries, a 63 s stall); a missing file does not come back.
    calls = []

    def upload() -> None:
        calls.append(1)
        open("/nonexistent/clot-hpo/model.keras", "rb")  # noqa: SIM115

    assert not is_transient(FileNotFoundError(2, "No such file"))
    assert call_with_retry("log the model", upload, tries=5, backoff_s=5.0, default="gave up") == "gave up"
    assert len(calls) == 1
