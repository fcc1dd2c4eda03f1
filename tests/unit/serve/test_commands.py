"""``clot-hpo serve`` and ``clot-hpo explain``: binding, warnings, exit codes, written overlays."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from clot_hpo.data.dicom import DicomSettings
from clot_hpo.serve import commands
from tests.support.champion import Champion, register_tiny_champion
from tests.support.cli import run_main


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Champion:
    return register_tiny_champion(tmp_path_factory.mktemp("explain-champion"), epochs=2, n_per_class=10)


def _serve_args(**overrides: Any) -> argparse.Namespace:
    values = dict(
        tracking_uri="sqlite:///x.db",
        model="models:/m@champion",
        host="127.0.0.1",
        port=8080,
        max_upload_mb=10.0,
        max_files=16,
        max_request_mb=32.0,
        max_concurrent_uploads=4,
        max_buffered_mb=128.0,
        trusted_hosts=[],
        max_pixels=50_000_000,
    )
    return argparse.Namespace(**{**values, **overrides})


class _Info:
    uri, version, run_id, backbone, image_size, threshold = (
        "models:/m@champion",
        "3",
        "r",
        "tiny_cnn",
        32,
        0.5,
    )
    dicom: DicomSettings | None = None  # the training's data.dicom, as stored with the model


class _Service:
    info = _Info()


@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("localhost", False), ("0.0.0.0", True)])
def test_serve_binds_loopback_and_warns_otherwise(
    host: str, warned: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    import clot_hpo.serve.service as service

    calls: dict[str, Any] = {}
    monkeypatch.setattr(service, "load_service", lambda uri, model: _Service())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.update(kwargs))
    monkeypatch.setattr("clot_hpo.serve.app.create_app", lambda svc, limits: ("app", limits))
    assert commands.serve_command(_serve_args(host=host)) == 0
    assert calls["host"] == host and calls["port"] == 8080
    out, err = capsys.readouterr()
    assert ("no authentication" in err) is warned
    assert "Serving models:/m@champion (version 3, tiny_cnn, 32 px, threshold 0.500)" in out
    assert "http://" in out and ":8080/" in out


def test_serve_with_an_unresolvable_model_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "mlflow.db"
    # An existing but empty store: the registered model does not exist.
    run = run_main(capsys, "serve", "--tracking-uri", f"sqlite:///{store}", "--port", "1", cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clot-hpo: error: "), run.stderr
    assert "does not exist" in lines[0]


def test_explain_writes_one_overlay_per_image(
    champion: Champion, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = [champion.positive, champion.negative]
    twin = tmp_path / "other" / champion.positive.name  # the same stem twice gets a number
    twin.parent.mkdir()
    twin.write_bytes(champion.positive.read_bytes())
    args = argparse.Namespace(
        tracking_uri=champion.tracking_uri,
        model=champion.model_uri,
        out=str(tmp_path / "out"),
        max_pixels=50_000_000,
        paths=[*map(str, images), str(twin)],
    )
    assert commands.explain_command(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_image = {line["image"]: line for line in lines}
    assert sorted(by_image) == sorted(map(str, [*images, twin]))
    names = sorted(Path(line["overlay"]).name for line in lines)
    stem = champion.positive.stem
    assert f"{stem}.gradcam.png" in names and f"{stem}-2.gradcam.png" in names
    for line in lines:
        assert Image.open(line["overlay"]).size == (256, 256)
        assert line["label"] == int(line["probability"] >= 0.5)
    assert by_image[str(champion.positive)]["probability"] == pytest.approx(
        by_image[str(twin)]["probability"]
    )


def test_serve_and_explain_take_their_defaults_like_predict() -> None:
    from clot_hpo.cli import build_parser
    from clot_hpo.config.defaults import apply_config_defaults

    args = build_parser().parse_args(["serve"])
    apply_config_defaults(args)
    assert (args.host, args.port) == ("127.0.0.1", 8080)
    assert args.model == "models:/blood-clot-detector@champion"
    assert args.tracking_uri == "sqlite:///mlruns/mlflow.db"
    args = build_parser().parse_args(["explain", "--out", "o", "a.png"])
    apply_config_defaults(args)
    assert args.model == "models:/blood-clot-detector@champion" and args.paths == ["a.png"]


def test_the_pages_limits_come_from_flags_else_the_configs_serve_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    import clot_hpo.serve.service as service
    from clot_hpo.cli import build_parser
    from clot_hpo.config.defaults import apply_config_defaults

    config = tmp_path / "exp.yaml"
    config.write_text("serve: {max_request_mb: 8, max_buffered_mb: 64, trusted_hosts: [clots.lan]}\n")
    args = build_parser().parse_args(
        ["serve", "--config", str(config), "--host", "0.0.0.0", "--max-concurrent-uploads", "2"]
    )
    apply_config_defaults(args)
    seen: dict[str, Any] = {}
    monkeypatch.setattr(service, "load_service", lambda uri, model: _Service())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    monkeypatch.setattr("clot_hpo.serve.app.create_app", lambda svc, limits: seen.update(limits=limits))
    assert commands.serve_command(args) == 0
    limits = seen["limits"]
    assert (limits.max_request_bytes, limits.max_buffered_bytes) == (8 * 2**20, 64 * 2**20)
    assert limits.max_concurrent_uploads == 2 and limits.max_file_bytes == 10 * 2**20
    # 0.0.0.0 is an address to bind, not a name a client writes in its Host header.
    assert limits.trusted_hosts == ("clots.lan",)
    assert "--trusted-host" not in capsys.readouterr().err  # the config named one
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0"])
    apply_config_defaults(args)
    assert commands.serve_command(args) == 0
    assert seen["limits"].trusted_hosts == () and "--trusted-host NAME" in capsys.readouterr().err


def test_the_page_windows_dicom_as_the_model_was_trained_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    import clot_hpo.serve.service as service

    class Trained(_Service):
        info = _Info()

    Trained.info.dicom = DicomSettings(window=(300.0, 600.0))
    seen: dict[str, Any] = {}
    monkeypatch.setattr(service, "load_service", lambda uri, model: Trained())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    monkeypatch.setattr("clot_hpo.serve.app.create_app", lambda svc, limits: seen.update(limits=limits))
    assert commands.serve_command(_serve_args()) == 0
    assert seen["limits"].dicom == DicomSettings(window=(300.0, 600.0))
    assert "warning" not in capsys.readouterr().err
    assert commands.serve_command(_serve_args(dicom_window=[40.0, 400.0])) == 0
    assert seen["limits"].dicom == DicomSettings(window=(40.0, 400.0)), "the flag wins"
    assert "the model was trained on DICOM pixels with" in capsys.readouterr().err
