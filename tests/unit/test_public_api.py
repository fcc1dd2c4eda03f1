"""Package-wide rules import-linter cannot express: one way to export, one owner of Optuna's trial API.

The layer and ownership contracts themselves are in ``pyproject.toml`` (``make lint``).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from clot_hpo.util import type_checking_imports

PACKAGE = Path(__file__).resolve().parents[2] / "clot_hpo"
SOURCES = sorted(PACKAGE.rglob("*.py"))
SUBPACKAGES = sorted(p.parent for p in PACKAGE.glob("*/__init__.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@pytest.mark.parametrize("package", SUBPACKAGES, ids=lambda p: p.name)
def test_each_package_exports_with_a_literal_all(package: Path) -> None:
    """Every ``__init__.py`` lists its exports once, in a form type checkers read, and completely.

    Either a literal ``__all__`` beside eager imports, or (PEP 562 packages) the
    ``if TYPE_CHECKING:`` re-exports that ``util.lazy_exports`` turns into ``__all__``.
    """
    source = (package / "__init__.py").read_text()
    tree = ast.parse(source)
    assigned = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets)
    ]
    module = importlib.import_module(_module_name(package / "__init__.py"))
    if "lazy_exports(globals())" in source:
        assert not assigned, f"{package.name}/__init__.py: __all__ comes from the TYPE_CHECKING imports"
        names = list(module.__all__)
        assert names == sorted(type_checking_imports(source)), f"{package.name}: __all__ is not the list"
    else:
        assert len(assigned) == 1, f"{package.name}/__init__.py: define __all__ once"
        assert isinstance(assigned[0], ast.List), (
            f"{package.name}/__init__.py: __all__ must be a literal list"
        )
        names = [ast.literal_eval(element) for element in assigned[0].elts]
    assert names and len(names) == len(set(names)), f"{package.name}: a name listed twice in __all__"
    for name in names:
        assert getattr(module, name, None) is not None, f"{module.__name__}.{name} is in __all__ but missing"


def test_lazy_exports_refuse_a_renamed_or_relative_reexport() -> None:
    """A name imported under another name, or relatively, would not be exported as listed."""
    assert type_checking_imports(
        "if TYPE_CHECKING:\n    from clot_hpo.a import x as x\n    from clot_hpo.b import y as y\n"
    ) == {"x": "clot_hpo.a", "y": "clot_hpo.b"}
    with pytest.raises(ValueError, match="as z"):
        type_checking_imports("if TYPE_CHECKING:\n    from clot_hpo.a import x as z\n")
    with pytest.raises(ValueError, match="absolute"):
        type_checking_imports("if TYPE_CHECKING:\n    from .a import x as x\n")


def test_the_top_level_package_exports_its_documented_names() -> None:
    import clot_hpo

    assert {"OptunaHyperParameters", "estimate_vram"} <= set(clot_hpo.__all__)
    for name in clot_hpo.__all__:
        assert getattr(clot_hpo, name) is not None


def test_no_module_imports_another_modules_underscore_names() -> None:
    """``from clot_hpo.x import _y`` and ``import clot_hpo.x._y`` are refused: make it public or move it."""
    offenders = []
    for path in SOURCES:
        here = _module_name(path)
        package = here if path.name == "__init__.py" else here.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                if not module.startswith("clot_hpo"):
                    continue
                names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("clot_hpo")]
            else:
                continue
            for name in names:
                if any(_private(part) for part in name.split(".")):
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {name}")
    assert not offenders, "imports of private names:\n" + "\n".join(offenders)


def test_only_the_search_package_calls_optuna_suggest() -> None:
    """Hyperparameters are sampled in one place: everything else asks ``OptunaHyperParameters``."""
    pattern = re.compile(r"\.suggest_[a-z]+\(")
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in SOURCES
        if PACKAGE / "search" not in path.parents
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert not offenders, "suggest_* outside clot_hpo/search:\n" + "\n".join(offenders)


def test_the_readme_package_table_matches_the_folders() -> None:
    """Every package and top-level module has a row in README's table, and every row exists."""
    readme = (PACKAGE.parent / "README.md").read_text()
    listed = set(re.findall(r"^\| `clot_hpo/([a-z_]+(?:/|\.py))` \|", readme, flags=re.MULTILINE))
    present = {f"{p.name}/" for p in SUBPACKAGES} | {
        p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")
    }
    assert listed == present, (
        f"missing from README: {sorted(present - listed)}; gone: {sorted(listed - present)}"
    )
