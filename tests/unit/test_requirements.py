"""The dependency split: runtime pins in requirements.txt, test and lint tools in requirements-dev.txt.

A wheel user, ``make demo`` and the Docker image install requirements.txt only; ``make test``,
``make test-fast`` and ``make lint`` add requirements-dev.txt.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEV_TOOLS = {
    "pytest", "pytest-timeout", "pytest-xdist", "playwright", "ruff", "mypy", "types-pyyaml", "import-linter",
}  # fmt: skip
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)(\[[^\]]*\])?==(\S+)$")


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pins(path: Path) -> tuple[dict[str, str], list[str]]:
    """``name -> version`` of every pin, and the ``-r`` includes; any other line is an error."""
    pins: dict[str, str] = {}
    includes: list[str] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            includes.append(line[3:].strip())
            continue
        match = PIN.match(line)
        assert match, f"{path.name}:{number}: expected an exact pin `name==version`, got {raw!r}"
        name = _name(match[1])
        assert name not in pins, f"{path.name}:{number}: {name} is pinned twice"
        pins[name] = match[3]
    return pins, includes


def test_runtime_pins_hold_no_test_or_lint_tool() -> None:
    runtime, includes = _pins(REPO / "requirements.txt")
    assert includes == []
    assert sorted(DEV_TOOLS & set(runtime)) == [], "test and lint tools belong in requirements-dev.txt"


def test_every_direct_need_of_the_package_is_pinned_for_runtime() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime, _ = _pins(REPO / "requirements.txt")
    assert sorted({_name(d) for d in project["dependencies"]} - set(runtime)) == []


def test_dev_pins_add_the_tools_on_top_of_the_runtime_pins() -> None:
    runtime, _ = _pins(REPO / "requirements.txt")
    dev, includes = _pins(REPO / "requirements-dev.txt")
    assert includes == ["requirements.txt"]
    assert sorted(DEV_TOOLS - set(dev)) == [], "every test and lint tool is pinned"
    assert sorted(set(dev) & set(runtime)) == [], "a runtime pin lives in requirements.txt only"


def test_the_image_installs_the_runtime_pins_only() -> None:
    lines = (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines()
    dockerfile = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert "pip install -r requirements.txt" in dockerfile
    assert "requirements-dev" not in dockerfile
    for tool in DEV_TOOLS:
        assert not re.search(rf"\b{re.escape(tool)}\b", dockerfile, re.I), f"{tool} in the Dockerfile"
