"""The shared helpers: an exception's first line, its chain, finite numbers, finished states."""

from __future__ import annotations

import math

import numpy as np

from clot_hpo.util import exception_chain, find_in_chain, finite_float, first_line, is_finished


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


def test_is_finished() -> None:
    from optuna.trial import TrialState

    assert is_finished(TrialState.COMPLETE) and is_finished("PRUNED")
    assert not is_finished(TrialState.FAIL) and not is_finished(TrialState.RUNNING)
