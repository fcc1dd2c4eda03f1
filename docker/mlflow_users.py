"""Logins of the compose stack's MLflow server (its basic-auth app), created as the admin.

    python mlflow_users.py ensure            # ensure-worker, then ensure-lock (the stack's service)
    python mlflow_users.py ensure-worker     # MLFLOW_WORKER_USER / MLFLOW_WORKER_PASSWORD
    python mlflow_users.py ensure-lock       # the promotion lock of MLFLOW_MODEL_NAME
    python mlflow_users.py add-reader NAME   # the password is read from stdin

Both run as the admin: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD come from the environment (never from the command line, where
``ps`` shows them to every user). The server gives every signed-in user read access
(``default_permission = READ``, docker/mlflow-entrypoint.sh); a user may change what it
created (the workers' experiments), and only the admin may register models or move aliases
of a model it did not create. So a reader sees every experiment, run and model in the UI,
and cannot log, register or promote.

``ensure-lock`` creates the registered model ``<MLFLOW_MODEL_NAME>.promotion-lock`` (default
``blood-clot-detector``), the lock every ``clot-hpo promote`` takes by creating a version of
it (clot_hpo/registry/lock.py). Created by the admin before anyone else can, it carries no
permission for other users: they get the server's default READ, so a reader or a worker can
neither take the lock (create a version), break it (delete one) nor delete the lock model;
only the admin, the promoting role, can. Left to the first ``promote`` instead, any signed-in
user could create it first and own it.

``ensure`` (both) is the stack's one-shot ``mlflow-users`` service: it creates the workers'
login, or resets its password to the one in ``.env``, and the lock. ``add-reader`` adds a person:

    docker compose run --rm -T mlflow-users add-reader alice < alice-password.txt

Exit codes: 0 done, 2 bad input (a placeholder or short password, a missing variable).
"""

from __future__ import annotations

import os
import sys

MIN_PASSWORD_LENGTH = 12
# clot_hpo.registry.lock.LOCK_SUFFIX: this script runs in the MLflow image, without clot_hpo.
LOCK_SUFFIX = ".promotion-lock"
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


def _ensure_lock() -> str:
    """Create the promotion lock model of MLFLOW_MODEL_NAME unless it exists."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    model = os.environ.get("MLFLOW_MODEL_NAME") or "blood-clot-detector"
    name = f"{model}{LOCK_SUFFIX}"
    uri = os.environ["MLFLOW_TRACKING_URI"]
    try:
        MlflowClient(uri, registry_uri=uri).create_registered_model(
            name,
            description=f"Promotion lock of {model!r}: `clot-hpo promote` holds it by creating a version. "
            "Do not delete.",
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return f"{name!r} exists"
    return f"{name!r} created"


def main(argv: list[str]) -> int:
    """Run one command; see the module's docstring."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        if not os.environ.get(var):
            return _refuse(f"{var} must be set (the server and the admin's login)")
    if argv in (["ensure-lock"], ["ensure"]):
        status = 0 if argv == ["ensure-lock"] else main(["ensure-worker"])
        if status == 0:
            print(f"mlflow_users: promotion lock {_ensure_lock()}")
        return status
    if argv[:1] == ["ensure-worker"] and len(argv) == 1:
        username = os.environ.get("MLFLOW_WORKER_USER") or "worker"
        password = os.environ.get("MLFLOW_WORKER_PASSWORD", "")
        why = _bad_password("MLFLOW_WORKER_PASSWORD", password)
    elif argv[:1] == ["add-reader"] and len(argv) == 2:
        username = argv[1]
        password = sys.stdin.readline().rstrip("\r\n")
        why = _bad_password(f"the password of {username!r} (on stdin)", password)
    else:
        return _refuse(
            "usage: mlflow_users.py ensure | ensure-worker | ensure-lock | add-reader NAME "
            "(password on stdin)"
        )
    if why:
        return _refuse(why)
    print(f"mlflow_users: {username!r} {_set_user(username, password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
