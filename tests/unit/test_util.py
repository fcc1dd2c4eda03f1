"""The shared helpers: an exception's first line, its chain, finite numbers, finished states."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clot_hpo.util import exception_chain, find_in_chain, finite_float, first_line


def test_first_line() -> None:
    assert first_line(ValueError("  bad value\nTraceback ...\n")) == "bad value"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError(""), default="") == ""
    assert first_line(RuntimeError("x" * 50), limit=10) == "x" * 10
    assert first_line("one\ntwo") == "one"


def test_exception_chain_follows_causes_and_contexts_once() -> None:
    try:
        try:
            raise OSError("disk")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        caught = outer
    assert [type(e) for e in exception_chain(caught)] == [RuntimeError, OSError]
    assert isinstance(find_in_chain(caught, OSError), OSError)
    assert find_in_chain(caught, KeyError) is None
    loop = ValueError("loop")
    loop.__context__ = loop  # a cycle must end
    assert list(exception_chain(loop)) == [loop]


def test_finite_float() -> None:
    assert finite_float("0.5") == 0.5 and finite_float(np.float32(2)) == 2.0 and finite_float(3) == 3.0
    for value in (None, "abc", math.nan, math.inf, True, [1]):
        assert finite_float(value) is None, value


def test_finished_means_complete_or_pruned() -> None:
    from optuna.trial import TrialState

    from clot_hpo.search.workers import FINISHED

    assert set(FINISHED) == {TrialState.COMPLETE, TrialState.PRUNED}
    assert TrialState.FAIL not in FINISHED and TrialState.RUNNING not in FINISHED


def test_backoff_waits_double_up_to_the_cap_and_stop_after_the_tries() -> None:
    from clot_hpo.util import backoff_waits

    assert list(backoff_waits(1.0, cap_s=5.0, tries=6)) == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert list(backoff_waits(1.0, tries=1)) == []
    jittered = list(backoff_waits(2.0, jitter=0.25, tries=4))
    assert all(base <= wait <= 1.25 * base for wait, base in zip(jittered, [2.0, 4.0, 8.0], strict=True))


def test_backoff_waits_stop_at_the_deadline() -> None:
    import time

    from clot_hpo.util import backoff_waits

    assert list(backoff_waits(1.0, until=time.monotonic() - 1)) == []
    waits = backoff_waits(1.0, until=time.monotonic() + 60)
    assert [next(waits) for _ in range(3)] == [1.0, 2.0, 4.0]


def test_retry_call_retries_what_may_heal_and_raises_the_rest_at_once() -> None:
    from clot_hpo.util import retry_call

    calls: list[str] = []
    told: list[float] = []

    def flaky() -> str:
        calls.append("x")
        if len(calls) < 3:
            raise ConnectionError("later")
        return "ok"

    def tell(exc: Exception, wait: float) -> None:
        told.append(wait)

    assert retry_call(flaky, transient=lambda e: True, waits=[0.0, 0.0, 0.0], on_retry=tell) == "ok"
    assert len(calls) == 3 and told == [0.0, 0.0]

    calls.clear()
    with pytest.raises(ConnectionError):  # the waits ran out: the last failure
        retry_call(flaky, transient=lambda e: True, waits=[0.0], on_retry=tell)
    assert len(calls) == 2

    calls.clear()
    with pytest.raises(ConnectionError):  # not transient: no second attempt
        retry_call(flaky, transient=lambda e: False, waits=[0.0, 0.0], on_retry=tell)
    assert len(calls) == 1
