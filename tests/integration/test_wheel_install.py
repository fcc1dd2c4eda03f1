"""An installed wheel (``pip install .``, not editable) carries the bundled search spaces and templates.

The wheel is built from a copy of what the Dockerfile copies (``pyproject.toml``,
``README.md``, ``clot_hpo/``), so the checkout's ``search_spaces/`` link cannot help, and is
installed into a fresh virtual environment whose only other entry is this environment's
site-packages (for the dependencies; the editable install there is never activated, as only
a site directory's own ``.pth`` files are read). Everything then runs from a folder outside
the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tests.support.cli import REPO

pytestmark = pytest.mark.slow


def _run(*cmd: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin/`` folder of a fresh venv with the wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "clot_hpo", src / "clot_hpo", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    built = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--quiet",
        "-w",
        work / "dist",
        "./src",
        cwd=work,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (work / "dist").glob("clot_hpo-*.whl")

    venv = work / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    assert made.returncode == 0, made.stderr
    site = _run(
        venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work
    ).stdout.strip()
    Path(site, "_clot_hpo_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        venv / "bin" / "python",
        "install",
        "--no-deps",
        "--no-index",
        "--quiet",
        wheel,
        cwd=work,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


def test_the_wheel_holds_every_bundled_search_space(installed: Path, tmp_path: Path) -> None:
    expected = sorted(p.stem for p in (REPO / "search_spaces").glob("*.yaml"))
    code = textwrap.dedent("""
        import json, clot_hpo
        from clot_hpo.search_space import (bundled_search_spaces, default_search_space_path,
                                           load_search_space, locate_search_space)
        names = bundled_search_spaces()
        for name in names:  # by name, as a config names them, and with the file suffix
            assert load_search_space(locate_search_space(name)).source.parent.is_dir()
            locate_search_space(name + ".yaml")
        print(json.dumps({"package": clot_hpo.__file__, "names": names,
                          "tiny": str(default_search_space_path("tiny_cnn"))}))
    """)
    result = _run(installed / "python", "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    venv = installed.parent
    assert Path(out["package"]).is_relative_to(venv), "the wheel's package must be the one imported"
    assert out["names"] == expected
    assert Path(out["tiny"]).is_relative_to(venv)


def test_the_wheel_renders_documents_from_its_templates(installed: Path, tmp_path: Path) -> None:
    """The report's and the model card's templates are package data of ``clot_hpo.render``."""
    code = textwrap.dedent("""
        import json
        from clot_hpo.render import document
        doc = document.Document("T")
        doc.add(document.Bullets(["a|b <i>"]), document.Table(["x"], [["1"]]))
        print(json.dumps({"module": document.__file__, "md": document.to_markdown(doc),
                          "html": document.to_html(doc)}))
    """)
    result = _run(installed / "python", "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert Path(out["module"]).is_relative_to(installed.parent)
    assert out["md"] == "# T\n\n- a|b \\<i>\n\n| x |\n|---|\n| 1 |\n"
    assert "<li>a|b &lt;i&gt;</li>" in out["html"] and "font-variant-numeric" in out["html"]


def test_clot_hpo_search_finds_bundled_spaces_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    assert _run(installed / "clot-hpo", "search", "--help", cwd=tmp_path).returncode == 0
    (tmp_path / "conf").mkdir()
    # tiny_cnn by default, resnet50 by bundled name; no data, so the search stops right after
    # the search spaces are resolved and loaded, with the data error (exit 2).
    (tmp_path / "conf" / "exp.yaml").write_text(
        "name: wheel\ndata: {path: no-data-here}\n"
        "search: {backbones: [tiny_cnn, resnet50], search_spaces: {resnet50: quickstart_resnet50}}\n"
    )
    result = _run(
        installed / "clot-hpo",
        "search",
        "conf/exp.yaml",
        "--no-tracking",
        "--storage",
        f"sqlite:///{tmp_path}/optuna.db",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert f"{tmp_path / 'conf' / 'no-data-here'}: data folder not found" in result.stderr
    assert "search space" not in result.stderr
