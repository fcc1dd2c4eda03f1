from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clot_hpo.config import ExperimentConfig, load_config, save_resolved
from clot_hpo.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_loads(path: Path) -> None:
    config = load_config(path)
    assert config.search.backbones


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"search": {"n_trails": 3}}, "search.n_trails: unknown key"),
        ({"search": {"n_trials": "many"}}, "search.n_trials"),
        ({"search": {"n_trials": 0}}, "search.n_trials"),
        ({"search": {"sampler": "grid"}}, "search.sampler"),
        ({"search": {"backbones": ["vgg16"]}}, "search.backbones.0"),
        ({"search": {"backbones": ["resnet50", "resnet50"]}}, "must not repeat"),
        ({"data": {"val_fraction": 0.5, "test_fraction": 0.5}}, "val_fraction + test_fraction < 0.9"),
        ({"budget": {"vram_gb": -1}}, "budget.vram_gb"),
        ("search: [unclosed", "invalid YAML"),
        ("- a list", "top level must be a mapping"),
    ],
)
def test_bad_configs_name_file_and_key(tmp_path: Path, data: object, needle: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_beat_yaml_and_none_leaves_yaml_alone(tmp_path: Path) -> None:
    path = _write(tmp_path, {"search": {"n_trials": 4, "sampler": "random"}, "seed": 1})
    config = load_config(path, {"search.n_trials": 9, "search.sampler": None, "seed": 5})
    assert config.search.n_trials == 9
    assert config.search.sampler == "random"
    assert config.seed == 5


def test_bad_override_is_reported_with_its_key(tmp_path: Path) -> None:
    path = _write(tmp_path, {})
    with pytest.raises(ConfigError, match="search.n_trials"):
        load_config(path, {"search.n_trials": -2})


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, {"name": "x", "search": {"n_trials": 2}}))
    saved = save_resolved(config, tmp_path / "out" / "resolved.yaml")
    again = ExperimentConfig.model_validate(yaml.safe_load(saved.read_text()))
    assert again == config
    assert again.study_name == "x"


def test_configuration_reference_matches_the_schema() -> None:
    from clot_hpo.config.reference import render

    assert (REPO / "docs/configuration.md").read_text() == render(), (
        "regenerate: python -m clot_hpo.config.reference > docs/configuration.md"
    )
