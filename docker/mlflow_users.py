"""Logins of the compose stack's MLflow server (its basic-auth app), created as the admin.

    python mlflow_users.py ensure-worker     # MLFLOW_WORKER_USER / MLFLOW_WORKER_PASSWORD
    python mlflow_users.py add-reader NAME   # the password is read from stdin

Both run as the admin: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD come from the environment (never from the command line, where
``ps`` shows them to every user). The server gives every signed-in user read access
(``default_permission = READ``, docker/mlflow-entrypoint.sh); a user may change what it
created (the workers' experiments), and only the admin may register models or move aliases
of a model it did not create. So a reader sees every experiment, run and model in the UI,
and cannot log, register or promote.

``ensure-worker`` is the stack's one-shot ``mlflow-users`` service: it creates the workers'
login, or resets its password to the one in ``.env``. ``add-reader`` adds a person:

    docker compose run --rm -T mlflow-users add-reader alice < alice-password.txt

Exit codes: 0 done, 2 bad input (a placeholder or short password, a missing variable).
"""

from __future__ import annotations

import os
import sys

MIN_PASSWORD_LENGTH = 12
PLACEHOLDERS = ("change-me", "changeme", "password", "secret", "admin")


def _refuse(message: str) -> int:
    print(f"mlflow_users: {message}", file=sys.stderr)
    return 2


def _bad_password(name: str, password: str) -> str | None:
    if not password:
        return f"{name} is empty"
    if password.lower().startswith(PLACEHOLDERS):
        return f"{name} is still a placeholder: replace it (e.g. with `openssl rand -hex 16`)"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"{name} must be at least {MIN_PASSWORD_LENGTH} characters long"
    return None


def _set_user(username: str, password: str) -> str:
    """Create ``username`` with ``password``, or reset the password of the existing user."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    client = AuthServiceClient(os.environ["MLFLOW_TRACKING_URI"])
    try:
        client.get_user(username)
    except MlflowException:
        client.create_user(username, password)
        return "created"
    client.update_user_password(username, password)
    return "password reset"


def main(argv: list[str]) -> int:
    """Run one command; see the module's docstring."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        if not os.environ.get(var):
            return _refuse(f"{var} must be set (the server and the admin's login)")
    if argv[:1] == ["ensure-worker"] and len(argv) == 1:
        username = os.environ.get("MLFLOW_WORKER_USER") or "worker"
        password = os.environ.get("MLFLOW_WORKER_PASSWORD", "")
        why = _bad_password("MLFLOW_WORKER_PASSWORD", password)
    elif argv[:1] == ["add-reader"] and len(argv) == 2:
        username = argv[1]
        password = sys.stdin.readline().rstrip("\r\n")
        why = _bad_password(f"the password of {username!r} (on stdin)", password)
    else:
        return _refuse("usage: mlflow_users.py ensure-worker | add-reader NAME (password on stdin)")
    if why:
        return _refuse(why)
    print(f"mlflow_users: {username!r} {_set_user(username, password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
