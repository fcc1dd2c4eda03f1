"""The guard of tests/unit/conftest.py: the project's own process starts are refused, a library's are not.

The guard's wrapper is exercised around a stand-in for the real call (nothing is started here);
the frames that call it are compiled under the file names the guard looks at.
"""

from __future__ import annotations

import sysconfig
from typing import Any

import pytest

from tests.unit.conftest import REPO, PyramidViolation, _guarded


def _call_from(filename: str, function: Any) -> Any:
    """``function()`` called from a frame whose code lives in ``filename``."""
    namespace: dict[str, Any] = {"function": function}
    exec(compile("def caller():\n    return function()\n", filename, "exec"), namespace)  # noqa: S102
    return namespace["caller"]()


def test_a_start_from_the_projects_code_is_refused_and_remembered() -> None:
    found: list[str] = []
    started: list[bool] = []
    guard = _guarded("subprocess", lambda: started.append(True), found)
    product = str(REPO / "clot_hpo" / "search" / "trial" / "launcher.py")
    with pytest.raises(PyramidViolation, match=r"subprocess from .*clot_hpo/search/trial/launcher\.py:2"):
        _call_from(product, guard)
    assert started == [] and len(found) == 1 and "tests/integration/" in found[0]


def test_a_libraries_own_helper_process_is_its_business() -> None:
    found: list[str] = []
    guard = _guarded("subprocess", lambda: "started", found)
    library = f"{sysconfig.get_paths()['purelib']}/git/cmd.py"
    assert _call_from(library, guard) == "started" and found == []


def test_listening_is_refused_whoever_asks() -> None:
    found: list[str] = []
    guard = _guarded("listen()", lambda: None, found, always=True)
    library = f"{sysconfig.get_paths()['purelib']}/uvicorn/server.py"
    with pytest.raises(PyramidViolation, match=r"listen\(\) from a library"):
        _call_from(library, guard)
    assert found
