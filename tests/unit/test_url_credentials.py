"""Issue 20, item 4: a credential anywhere in a URL is hidden, and every command taking a URL warns.

``user:password@`` was hidden before; a password in the query string (``?password=``,
``sslpassword``, ``passfile``, or any key naming a password, secret or token) was written as
given: into the ``optuna.storage`` tag, the config artifacts, the trial's task file.
"""

from __future__ import annotations

import logging

import pytest

from clot_hpo.cli import build_parser
from clot_hpo.util import redact_secrets, redact_text, redact_url

SECRET = "Pg-q8w2e-secret"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql+psycopg2://optuna@db:5432/optuna?password={SECRET}&sslmode=require",
            "postgresql+psycopg2://optuna@db:5432/optuna?password=***&sslmode=require",
        ),
        (
            f"postgresql://optuna:{SECRET}@db/optuna?sslpassword={SECRET}&passfile=/home/a/.pgpass",
            "postgresql://optuna:***@db/optuna?sslpassword=***&passfile=***",
        ),
        (
            f"postgresql://db/optuna?application_name=x&PassWord={SECRET}",
            "postgresql://db/optuna?application_name=x&PassWord=***",
        ),
        (f"http://mlflow:5000/?access_token={SECRET}", "http://mlflow:5000/?access_token=***"),
        (
            f"mysql://db/x?api_key={SECRET};client_secret={SECRET}",
            "mysql://db/x?api_key=***;client_secret=***",
        ),
        (
            "postgresql://db/optuna?sslmode=require&application_name=w1",
            "postgresql://db/optuna?sslmode=require&application_name=w1",
        ),
    ],
)
def test_every_credential_in_a_url_is_hidden(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_text(f"cannot open {url} (refused)") == f"cannot open {shown} (refused)"
    assert redact_secrets({"search": {"storage": url}, "notes": [url]}) == {
        "search": {"storage": shown},
        "notes": [shown],
    }


def test_a_libpq_connection_string_in_an_error_is_hidden() -> None:
    line = f'connection to server failed: host=db dbname=optuna password={SECRET} sslpassword="{SECRET}"'
    assert SECRET not in redact_text(line)
    assert "host=db dbname=optuna password=***" in redact_text(line)


COMMANDS = [
    ["search", "exp.yaml", "--storage", f"postgresql://u@db/o?password={SECRET}"],
    ["promote", "--experiment", "e", "--storage", f"postgresql://u@db/o?password={SECRET}"],
    ["promote", "--experiment", "e", "--tracking-uri", f"http://u:{SECRET}@mlflow:5000"],
    ["predict", "--tracking-uri", f"postgresql://u@db/mlflow?password={SECRET}", "a.png"],
    ["evaluate", "--tracking-uri", f"postgresql://u@db/mlflow?password={SECRET}", "--data", "d"],
    ["serve", "--tracking-uri", f"postgresql://u@db/mlflow?password={SECRET}"],
    ["explain", "--tracking-uri", f"http://mlflow/?token={SECRET}", "--out", "o", "a.png"],
    ["report", "--experiment", "e", "--tracking-uri", f"postgresql://u:{SECRET}@db/mlflow"],
]


def _flag(argv: list[str]) -> str:
    return next(a for a in argv if a in ("--storage", "--tracking-uri"))


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: f"{argv[0]} {_flag(argv)}")
def test_every_command_taking_a_url_warns_about_its_password(
    argv: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    from clot_hpo.cli import warn_url_credentials

    args = build_parser().parse_args(argv)
    with caplog.at_level(logging.WARNING, logger="clot_hpo"):
        warn_url_credentials(args)
    assert [r.getMessage().split(" ", 1)[0] for r in caplog.records] == [_flag(argv)]
    assert "carries a password" in caplog.text and SECRET not in caplog.text


def test_a_url_without_a_credential_gives_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    from clot_hpo.cli import warn_url_credentials

    args = build_parser().parse_args(["serve", "--tracking-uri", "http://mlflow:5000/?x=1"])
    with caplog.at_level(logging.WARNING, logger="clot_hpo"):
        warn_url_credentials(args)
    assert caplog.records == []
