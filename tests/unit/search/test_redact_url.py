"""``redact_url`` hides passwords (parsed by SQLAlchemy's ``make_url``) and nothing else."""

from __future__ import annotations

import pytest

from clot_hpo.search.storage import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg2://optuna:s3cr%40t@postgres:5432/optuna",
            "postgresql+psycopg2://optuna:***@postgres:5432/optuna",
        ),
        ("http://user:pw@mlflow:5000", "http://user:***@mlflow:5000"),
        ("mysql://u:p@h/db?charset=utf8", "mysql://u:***@h/db?charset=utf8"),
        # An unescaped "@" in the password: still nothing of it is shown.
        ("postgresql://u:p@ss@h/db", "postgresql://***@h/db"),
    ],
)
def test_passwords_are_hidden(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///mlruns/optuna.db",
        "sqlite:////srv/team@site/optuna.db",  # an "@" in a path is no password
        "postgresql://optuna@postgres:5432/optuna",  # a user without a password
        "sqlite:///:memory:",
    ],
)
def test_urls_without_a_password_are_unchanged(url: str) -> None:
    assert redact_url(url) == url
