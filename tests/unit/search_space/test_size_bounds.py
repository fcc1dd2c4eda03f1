"""Issue 12: a search space cannot ask for image sizes or batch sizes no model can use."""

from __future__ import annotations

import pytest

from clot_hpo.errors import ConfigError
from clot_hpo.search_space.loader import parse_search_space


def _space(**params: object) -> dict[str, object]:
    return {"backbone": "tiny_cnn", "parameters": params}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"image_size": {"type": "int", "low": 0, "high": 64}}, "image_size: `16 <= image_size <= 4096`"),
        ({"image_size": {"type": "categorical", "choices": [-32, 64]}}, "but got -32"),
        ({"image_size": {"type": "fixed", "value": 100000}}, "but got 100000"),
        ({"image_size": {"type": "int", "low": 32, "high": 4097}}, "but got 4097"),
        ({"image_size": {"type": "float", "low": 32, "high": 64}}, "image_size: must be an integer"),
        ({"batch_size": {"type": "categorical", "choices": [0, 8]}}, "`1 <= batch_size <= 1024`"),
        ({"batch_size": {"type": "fixed", "value": -1}}, "but got -1"),
        ({"batch_size": {"type": "categorical", "choices": ["big"]}}, "batch_size: must be an integer"),
    ],
)
def test_out_of_range_sizes_are_refused(spec: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=r"x\.yaml: parameters\.") as err:
        parse_search_space(_space(**spec), source="x.yaml")
    assert needle in str(err.value)


def test_sizes_at_the_bounds_pass() -> None:
    space = parse_search_space(
        _space(
            image_size={"type": "categorical", "choices": [16, 4096]},
            batch_size={"type": "int", "low": 1, "high": 1024, "log": True},
        )
    )
    assert space.parameters["image_size"].choices == (16, 4096)
