"""Loading and validating YAML search spaces (no Keras, TensorFlow or Optuna needed)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from clot_hpo.errors import ConfigError
from clot_hpo.search_space import (
    Condition,
    ParamSpec,
    default_search_space_path,
    list_search_spaces,
    load_search_space,
    parse_search_space,
)

REPO = Path(__file__).resolve().parents[3]

VALID = """\
backbone: efficientnet_b1
parameters:
  learning_rate: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
  optimizer: {type: categorical, choices: [adam, adamw, sgd]}
  momentum: {type: float, low: 0.8, high: 0.99, when: {optimizer: [sgd]}}
  batch_size: {type: categorical, choices: [8, 16, 32]}
  use_dense: {type: bool}
  dense_units: {type: int, low: 64, high: 256, step: 64, when: {use_dense: [true]}}
  epochs: {type: fixed, value: 3}
"""


def _write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_documented_example_loads_into_typed_specs(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID)
    space = load_search_space(path)
    assert space.backbone == "efficientnet_b1" and space.source == path
    assert list(space.parameters) == [
        "learning_rate",
        "optimizer",
        "momentum",
        "batch_size",
        "use_dense",
        "dense_units",
        "epochs",
    ]
    p = space.parameters
    assert p["learning_rate"] == ParamSpec("learning_rate", "float", low=1e-5, high=1e-2, log=True)
    assert p["optimizer"].choices == ("adam", "adamw", "sgd")
    assert p["momentum"].when == Condition("optimizer", ("sgd",))
    assert p["dense_units"] == ParamSpec(
        "dense_units", "int", low=64, high=256, step=64, when=Condition("use_dense", (True,))
    )
    assert p["epochs"].value == 3
    with pytest.raises(AttributeError):
        p["optimizer"].type = "int"  # type: ignore[misc]  # frozen


def test_to_dict_round_trips(tmp_path: Path) -> None:
    space = load_search_space(_write(tmp_path, VALID))
    dumped = _write(tmp_path, yaml.safe_dump(space.to_dict(), sort_keys=False), "dumped.yaml")
    again = load_search_space(dumped)
    assert again.parameters == space.parameters and again.backbone == space.backbone
    assert parse_search_space(space.to_dict(), source=space.source) == space


def test_numeric_text_such_as_1e_minus_5_is_read_as_a_number(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML) reads `1e-5` as a string; the loader accepts it as the number it means.
    space = load_search_space(
        _write(
            tmp_path,
            """\
        backbone: b
        parameters:
          lr: {type: float, low: 1e-5, high: 1e-2, log: true}
    """,
        )
    )
    assert space.parameters["lr"].low == 1e-5 and isinstance(space.parameters["lr"].low, float)


INVALID = [
    # (id, yaml text, key path, rule fragment)
    (
        "unknown-type",
        "parameters:\n  lr: {type: floaty, low: 0, high: 1}",
        "parameters.lr.type",
        "unknown type 'floaty'",
    ),
    (
        "low-above-high",
        "parameters:\n  lr: {type: float, low: 3, high: 1}",
        "parameters.lr",
        "`low <= high` must hold, but got low=3.0, high=1.0",
    ),
    (
        "int-low-above-high",
        "parameters:\n  n: {type: int, low: 5, high: 2}",
        "parameters.n",
        "`low <= high` must hold, but got low=5, high=2",
    ),
    (
        "log-low-zero",
        "parameters:\n  lr: {type: float, low: 0.0, high: 1.0, log: true}",
        "parameters.lr",
        "log sampling needs low > 0, but got low=0.0",
    ),
    (
        "log-with-step",
        "parameters:\n  n: {type: int, low: 1, high: 64, step: 2, log: true}",
        "parameters.n",
        "log sampling cannot be combined with step",
    ),
    (
        "unknown-param-key",
        "parameters:\n  lr: {type: float, lo: 0, high: 1}",
        "parameters.lr.lo",
        "unknown key for type float",
    ),
    (
        "key-of-another-type",
        "parameters:\n  lr: {type: float, low: 0, high: 1, choices: [1]}",
        "parameters.lr.choices",
        "unknown key for type float",
    ),
    ("unknown-top-key", "paramters:\n  lr: {type: bool}", "paramters", "unknown key"),
    (
        "empty-choices",
        "parameters:\n  opt: {type: categorical, choices: []}",
        "parameters.opt.choices",
        "must list at least one value",
    ),
    (
        "missing-high",
        "parameters:\n  lr: {type: float, low: 0}",
        "parameters.lr",
        "missing required key `high`",
    ),
    (
        "missing-type",
        "parameters:\n  lr: {low: 0, high: 1}",
        "parameters.lr",
        "missing required key `type`",
    ),
    (
        "missing-choices",
        "parameters:\n  opt: {type: categorical}",
        "parameters.opt",
        "missing required key `choices`",
    ),
    (
        "missing-fixed-value",
        "parameters:\n  e: {type: fixed}",
        "parameters.e",
        "missing required key `value`",
    ),
    (
        "undefined-parent",
        "parameters:\n  m: {type: float, low: 0, high: 1, when: {optimizer: [sgd]}}",
        "parameters.m.when",
        "parent 'optimizer' must be `backbone` or a parameter defined earlier",
    ),
    (
        "parent-defined-later",
        "parameters:\n  m: {type: float, low: 0, high: 1, when: {opt: [sgd]}}\n"
        "  opt: {type: categorical, choices: [sgd]}",
        "parameters.m.when",
        "defined later",
    ),
    (
        "condition-value-not-a-choice",
        "parameters:\n  opt: {type: categorical, choices: [adam, sgd]}\n"
        "  m: {type: float, low: 0, high: 1, when: {opt: [sgdd]}}",
        "parameters.m.when.opt",
        "'sgdd' is not a value 'opt' can take",
    ),
    (
        "condition-two-parents",
        "parameters:\n  a: {type: bool}\n  b: {type: bool}\n  c: {type: bool, when: {a: [true], b: [true]}}",
        "parameters.c.when",
        "must map one parent",
    ),
    (
        "condition-on-itself",
        "parameters:\n  a: {type: bool, when: {a: [true]}}",
        "parameters.a.when",
        "conditioned on itself",
    ),
    (
        "param-not-mapping",
        "parameters:\n  lr: 0.1",
        "parameters.lr",
        "must be a mapping with a `type`",
    ),
    (
        "parameters-not-mapping",
        "parameters: [lr]",
        "parameters",
        "must be a mapping of name to spec",
    ),
    ("parameters-empty", "parameters: {}", "parameters", "must define at least one parameter"),
    (
        "int-not-integer",
        "parameters:\n  n: {type: int, low: 0.5, high: 4}",
        "parameters.n.low",
        "must be an integer",
    ),
    (
        "not-a-number",
        "parameters:\n  lr: {type: float, low: small, high: 1}",
        "parameters.lr.low",
        "must be a number, but got 'small'",
    ),
    (
        "step-not-positive",
        "parameters:\n  n: {type: int, low: 0, high: 4, step: 0}",
        "parameters.n.step",
        "must be > 0",
    ),
    (
        "log-not-bool",
        "parameters:\n  lr: {type: float, low: 1, high: 2, log: yes please}",
        "parameters.lr.log",
        "must be true or false",
    ),
    (
        "mixed-choice-types",
        "parameters:\n  s: {type: categorical, choices: [1, 2.5]}",
        "parameters.s.choices",
        "must all have one type",
    ),
    (
        "null-choice",
        "parameters:\n  s: {type: categorical, choices: [a, null]}",
        "parameters.s.choices",
        "not null",
    ),
    (
        "repeated-choice",
        "parameters:\n  s: {type: categorical, choices: [a, a]}",
        "parameters.s.choices",
        "must not repeat",
    ),
    (
        "default-out-of-range",
        "parameters:\n  lr: {type: float, low: 0, high: 1, default: 2}",
        "parameters.lr.default",
        "must lie in [low, high]",
    ),
    (
        "default-not-a-choice",
        "parameters:\n  s: {type: categorical, choices: [a, b], default: c}",
        "parameters.s.default",
        "must be one of the choices",
    ),
    (
        "reserved-name",
        "parameters:\n  backbone: {type: categorical, choices: [a]}",
        "parameters.backbone",
        "reserved",
    ),
    ("bad-name", "parameters:\n  2fast: {type: bool}", "parameters.2fast", "must be identifiers"),
]


@pytest.mark.parametrize(("text", "key_path", "rule"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_each_invalid_rule_names_file_and_key_path(
    tmp_path: Path, text: str, key_path: str, rule: str
) -> None:
    path = _write(tmp_path, "backbone: b\n" + text + "\n")
    with pytest.raises(ConfigError) as info:
        load_search_space(path)
    message = str(info.value)
    assert f"{path}: {key_path}: " in message
    assert rule in message
    assert "\n" not in message  # one line for the CLI


def test_the_documented_message_verbatim(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        backbone: b
        parameters:
          learning_rate: {type: float, low: 0, high: 1.0e-2, log: true}
    """,
    )
    with pytest.raises(ConfigError) as info:
        load_search_space(path)
    assert str(info.value) == f"{path}: parameters.learning_rate: log sampling needs low > 0, but got low=0.0"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- a\n- b\n", "the top level must be a mapping, but got list"),
        ("", "the top level must be a mapping, but got an empty file"),
        ("parameters:\n  a: {type: bool}\n", "backbone: missing required key"),
        ("backbone: b\n", "parameters: missing required key"),
        ("backbone: [b]\nparameters:\n  a: {type: bool}\n", "backbone: must be a name"),
        ("backbone: b\nparameters:\n  a: {type: bool\n", "invalid YAML (line"),
        ("backbone: b\nparameters:\n  a: {type: bool}\n  a: {type: bool}\n", "duplicate key 'a'"),
    ],
    ids=[
        "list",
        "empty",
        "no-backbone",
        "no-parameters",
        "backbone-not-name",
        "syntax",
        "duplicate-key",
    ],
)
def test_file_level_errors(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_search_space(path)
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: search space file not found"):
        load_search_space(tmp_path / "nope.yaml")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        backbone: b
        parameters:
          lr: {type: float, low: 0, high: 1, log: true}
          opt: {type: categorical, choices: []}
          m: {type: float, low: 0, high: 1, when: {opt: [sgd]}}
          ok: {type: bool}
    """,
    )
    with pytest.raises(ConfigError) as info:
        load_search_space(path)
    message = str(info.value)
    assert "parameters.lr: log sampling" in message and "parameters.opt.choices" in message
    # `m` names an (invalid) parent that is declared: no cascade of "not defined" errors.
    assert "parameters.m" not in message and "parameters.ok" not in message


def test_default_paths_and_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for backbone in ("efficientnet_b1", "resnet50", "tiny_cnn"):
        path = default_search_space_path(backbone)
        # The bundled files ship inside the package; the checkout's search_spaces/ links to them.
        assert path.resolve() == (REPO / "search_spaces" / f"{backbone}.yaml").resolve()
        assert load_search_space(path).backbone == backbone
    assert {"efficientnet_b1", "resnet50", "tiny_cnn"} <= set(list_search_spaces())
    with pytest.raises(ConfigError, match=r"no search space for backbone 'vgg99'.*available: .*resnet50"):
        default_search_space_path("vgg99")

    # Falls back to ./search_spaces for names the repository does not have.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "search_spaces").mkdir()
    _write(tmp_path / "search_spaces", VALID.replace("efficientnet_b1", "custom"), "custom.yaml")
    assert default_search_space_path("custom") == tmp_path / "search_spaces" / "custom.yaml"
    assert "custom" in list_search_spaces() and "resnet50" in list_search_spaces()
    assert (
        default_search_space_path("resnet50").resolve()
        == (REPO / "search_spaces" / "resnet50.yaml").resolve()
    )
