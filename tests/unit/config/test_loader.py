from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from clot_hpo.config import ExperimentConfig, load_config, read_yaml, save_resolved
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


# ----- one strict YAML reader -------------------------------------------------------------
def test_a_key_repeated_in_one_mapping_names_file_key_path_and_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nsearch:\n  n_trials: 4\n  sampler: tpe\n  n_trials: 40\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: search.n_trials: duplicate key 'n_trials' (lines 3 and 5); "
        "YAML would keep only the last one"
    )


def test_duplicates_inside_lists_and_yaml_merge_keys(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "search:\n  backbones: [tiny_cnn]\n  search_spaces: {tiny_cnn: a.yaml, tiny_cnn: b.yaml}\n"
    )
    with pytest.raises(
        ConfigError, match=r"search\.search_spaces\.tiny_cnn: duplicate key 'tiny_cnn' \(lines 3 and 3\)"
    ):
        load_config(path)
    # `<<:` overrides keys on purpose: not a duplicate.
    merged = _write(tmp_path, "x: &b {n_trials: 2, sampler: tpe}\nsearch:\n  <<: *b\n  n_trials: 5\n")
    assert read_yaml(merged)["search"] == {"n_trials": 5, "sampler": "tpe"}


def test_an_unknown_key_suggests_the_near_one_or_lists_the_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"search\.n_trails: unknown key \(did you mean 'n_trials'\?\)"):
        load_config(_write(tmp_path, {"search": {"n_trails": 3}}))
    with pytest.raises(ConfigError, match=r"budget\.zzz: unknown key \(allowed: vram_gb, safety_margin, "):
        load_config(_write(tmp_path, {"budget": {"zzz": 3}}))


# ----- relative paths ---------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_loads_from_any_working_directory(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(path)
    assert Path(config.data.path).parent == REPO / "data"
    for space in config.search.search_spaces.values():
        assert Path(space).is_file()
    # Where results go is the working directory's business (make demo: ./mlruns).
    assert config.search.storage.startswith("sqlite:///mlruns/")
    assert config.tracking.uri == "sqlite:///mlruns/mlflow.db"


def test_paths_a_config_reads_are_relative_to_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project" / "experiments"
    folder.mkdir(parents=True)
    (folder / "spaces").mkdir()
    (folder / "spaces" / "mine.yaml").write_text("backbone: resnet50\nparameters:\n  a: {type: bool}\n")
    path = folder / "exp.yaml"
    path.write_text(
        "data: {path: ../images}\n"
        "training: {weights: ../weights/b1.h5}\n"
        "search:\n  backbones: [resnet50, efficientnet_b1, tiny_cnn]\n  search_spaces:\n"
        "    resnet50: spaces/mine.yaml\n    efficientnet_b1: quickstart_efficientnet_b1\n"
        "    tiny_cnn: tiny_cnn.yaml\n"
        "  storage: sqlite:///mlruns/optuna.db\n"
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("project/experiments/exp.yaml"))
    assert config.data.path == str(tmp_path / "project" / "images")
    assert config.training.weights == str(tmp_path / "project" / "weights" / "b1.h5")
    spaces = {k: Path(v) for k, v in config.search.search_spaces.items()}
    assert spaces["resnet50"] == folder / "spaces" / "mine.yaml"
    # Bare names that are no file next to the config are bundled search spaces.
    assert (
        spaces["efficientnet_b1"].name == "quickstart_efficientnet_b1.yaml"
        and spaces["efficientnet_b1"].is_file()
    )
    assert spaces["tiny_cnn"].resolve() == (REPO / "search_spaces" / "tiny_cnn.yaml").resolve()
    assert config.search.storage == "sqlite:///mlruns/optuna.db"  # the working directory's


def test_keywords_absolute_paths_and_overrides_are_left_alone(tmp_path: Path) -> None:
    path = _write(tmp_path, {"data": {"path": "/srv/data"}, "training": {"weights": "none"}})
    config = load_config(path, {"search.n_trials": 2})
    assert config.data.path == "/srv/data" and config.training.weights == "none"
    assert load_config(_write(tmp_path, {})).training.weights == "imagenet"
    # A command-line value is relative to the working directory, as on any command line.
    assert load_config(path, {"data.path": "data/here"}).data.path == "data/here"
    # No file, no folder to be relative to: the defaults stay as they are.
    assert load_config(None).data.path == "data/synthetic"


def test_a_missing_search_space_says_where_it_was_looked_for(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"search": {"backbones": ["resnet50"], "search_spaces": {"resnet50": "search_spaces/x.yaml"}}},
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(
        f"{path}: search.search_spaces.resnet50: search space 'search_spaces/x.yaml' not found: "
    )
    assert f"tried {tmp_path / 'search_spaces' / 'x.yaml'}" in message
    assert "bundled: efficientnet_b1, " in message and "a bare name such as resnet50" in message

    path = _write(tmp_path, {"search": {"backbones": ["resnet50"], "search_spaces": {"resnet50": "nope"}}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"tried {tmp_path / 'nope'}, " in str(info.value)
    assert str(Path("bundled") / "nope.yaml") in str(info.value)


# ----- keys nothing reads -----------------------------------------------------------------
def _leaves(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for name, field in model.model_fields.items():
        sub = next(
            (
                a
                for a in (field.annotation, *getattr(field.annotation, "__args__", ()))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
        out += _leaves(sub, f"{prefix}{name}.") if sub is not None else [(f"{prefix}{name}", name)]
    return out


def test_every_config_key_is_read_by_the_package() -> None:
    """A documented key that no code reads is a promise broken in silence (training.verbose was)."""

    code = "\n".join(
        p.read_text(encoding="utf-8")
        for p in (REPO / "clot_hpo").rglob("*.py")
        if "config" not in p.relative_to(REPO / "clot_hpo").parts
    )
    unread = [
        dotted
        for dotted, name in _leaves(ExperimentConfig)
        if not re.search(rf"\.{name}\b|\[\"{name}\"\]", code)
    ]
    assert unread == []


def test_removed_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"training\.verbose: unknown key"):
        load_config(_write(tmp_path, {"training": {"verbose": False}}))


def test_the_schema_module_has_no_unused_public_constants() -> None:
    """Names such as the old ``BACKBONES`` tuple drift from the real list when nothing reads them."""
    import clot_hpo.config.schema as schema

    code = "\n".join(
        p.read_text(encoding="utf-8")
        for p in (REPO / "clot_hpo").rglob("*.py")
        if "config" not in p.relative_to(REPO / "clot_hpo").parts
    )
    constants = [
        n for n, v in vars(schema).items() if n.isupper() and not n.startswith("_") and not callable(v)
    ]
    assert [n for n in constants if n not in code] == []
