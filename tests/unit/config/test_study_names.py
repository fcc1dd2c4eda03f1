"""Issue 12: a study name becomes a folder under mlruns/studies/, so it is validated."""

from __future__ import annotations

import pytest

from clot_hpo.config import load_config
from clot_hpo.errors import ConfigError


@pytest.mark.parametrize("name", ["../../x", "/etc", "a/b", ".hidden", "", "x" * 129, "a b", "..\\x"])
def test_unsafe_study_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=r"search\.study_name: .*letters, digits.*but got"):
        load_config(None, overrides={"search.study_name": name})


def test_the_experiment_name_follows_the_same_rule() -> None:
    with pytest.raises(ConfigError, match=r"name: .*not starting with `\.`"):
        load_config(None, overrides={"name": "../escape"})


@pytest.mark.parametrize("name", ["kaggle-bloodclot", "study_2026.11", "A" * 128, "0-start"])
def test_ordinary_study_names_pass(name: str) -> None:
    assert load_config(None, overrides={"search.study_name": name}).study_name == name
