"""``clot-hpo estimate-vram``: JSON and table output, exit codes."""

from __future__ import annotations

import json

import pytest

from clot_hpo.budget import estimate_vram
from clot_hpo.cli import main
from tests.support.cli import run_main

BASE = ["estimate-vram", "--backbone", "tiny_cnn", "--image-size", "32", "--batch-size", "4"]


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_json_reports_total_and_fit(capsys: pytest.CaptureFixture[str]) -> None:
    out = _json(capsys, [*BASE, "--vram-gb", "4", "--json"])
    assert out["total_bytes"] == estimate_vram("tiny_cnn", 32, 4).total_bytes
    assert out["total_bytes"] == sum(out["breakdown"].values())
    assert out["fits"] is True and out["budget_bytes"] == int(4 * 1024**3 * 0.9)
    assert out["max_batch_size"] >= 4
    assert out["decision"]["action"] == "run"


def test_json_says_when_it_does_not_fit_and_still_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    out = _json(capsys, [*BASE, "--mixed-precision", "--trainable", "head", "--vram-gb", "0.01", "--json"])
    assert out["fits"] is False
    assert out["mixed_precision"] is True and out["trainable"] == "head"
    assert out["total_bytes"] > out["budget_bytes"]


def test_json_without_budget_has_no_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    out = _json(capsys, [*BASE, "--optimizer", "sgd", "--json"])
    assert "fits" not in out and out["optimizer"] == "sgd"


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--vram-gb", "4"]) == 0
    text = capsys.readouterr().out
    assert "activations" in text and "total" in text and "fits" in text


@pytest.mark.parametrize(
    ("flag", "value", "needle"), [("--image-size", "0", "image_size"), ("--vram-gb", "-1", "vram_gb")]
)
def test_bad_input_exits_2_with_one_line(
    flag: str, value: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*BASE]
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    proc = run_main(capsys, *argv)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("clot-hpo")]
    assert len(errors) == 1 and needle in errors[0]
    assert "Traceback" not in proc.stderr
