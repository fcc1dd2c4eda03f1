"""A promotion lock that works across processes and machines, through the model registry itself.

Two ``clot-hpo promote`` processes must not interleave "read the champion, compare, move
the alias": the later one could move the alias to a worse model, or register a run twice.
MLflow has no compare-and-set on tags, but creating a registered model is atomic: the
registry refuses a name that exists (``RESOURCE_ALREADY_EXISTS``, from a unique key in the
SQL store, whether reached directly through ``sqlite:///`` / ``postgresql://`` or through an
``mlflow server``). So the lock of model ``M`` is a registered model named
``M.promotion-lock``: whoever creates it holds the lock, deleting it releases it. Its tags
say who holds it (host, process, since when), and the waiting process prints that.

A holder that died (killed, machine lost) leaves the lock behind; after ``stale_after_s``
(10 minutes by default, a promotion takes seconds) a waiter deletes it and tries again.
Deleting someone else's fresh lock is avoided by comparing the holder's token just before
deleting; the window between that read and the delete is the one race left, and only for
locks already past their age limit.

One mechanism for every setup (SQLite file, PostgreSQL, MLflow server): the Optuna
storage's PostgreSQL advisory locks would not cover a SQLite store or a server whose
database is out of reach.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from clot_hpo.errors import ConfigError
from clot_hpo.tracking.store import MlflowClient, MlflowException, is_already_exists, is_not_found

log = logging.getLogger("clot_hpo.registry")

LOCK_SUFFIX = ".promotion-lock"
TAG_HOLDER = "clot_hpo.lock.holder"  # host pid=... token=...
TAG_TOKEN = "clot_hpo.lock.token"
TAG_SINCE = "clot_hpo.lock.since"  # Unix time the lock was taken
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_STALE_AFTER_S = 600.0
POLL_S = 0.5


def lock_name(model_name: str) -> str:
    """The registered model that is the lock of ``model_name``."""
    return f"{model_name}{LOCK_SUFFIX}"


def _holder(client: MlflowClient, name: str) -> tuple[str, str, float] | None:
    """(holder, token, since) of the lock, or None when nobody holds it."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise
    tags = model.tags or {}
    try:
        since = float(tags.get(TAG_SINCE, "0"))
    except ValueError:
        since = 0.0
    return tags.get(TAG_HOLDER, "unknown"), tags.get(TAG_TOKEN, ""), since


def _break_if_stale(client: MlflowClient, name: str, stale_after_s: float) -> None:
    held = _holder(client, name)
    if held is None:
        return
    holder, token, since = held
    age = time.time() - since
    if since and age < stale_after_s:
        return
    again = _holder(client, name)
    if again is None or again[1] != token:  # released or retaken meanwhile: not ours to break
        return
    log.warning("promote: breaking the lock %s held by %s for %.0f s (stale)", name, holder, age)
    try:
        client.delete_registered_model(name)
    except MlflowException as exc:
        if not is_not_found(exc):
            raise


@contextmanager
def promotion_lock(
    client: MlflowClient,
    model_name: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[str]:
    """Hold the promotion lock of ``model_name`` for the block; yields the holder's description.

    Args:
        client: a client of the registry (its tracking URI is the registry's).
        model_name: the registered model whose alias the block may move.
        timeout_s: how long to wait for another holder before giving up.
        stale_after_s: a lock older than this is taken to be left by a dead process.
        on_wait: called once with a sentence naming the holder when this process has to wait.

    Raises:
        ConfigError: (exit code 2) the lock stayed taken for ``timeout_s``; the message names
            the holder and the registered model to delete if that holder is gone.
    """
    name = lock_name(model_name)
    token = secrets.token_hex(8)
    me = f"{socket.gethostname()} pid={os.getpid()} token={token}"
    deadline = time.monotonic() + timeout_s
    told = False
    while True:
        try:
            client.create_registered_model(
                name,
                tags={TAG_HOLDER: me, TAG_TOKEN: token, TAG_SINCE: f"{time.time():.3f}"},
                description=(
                    f"Promotion lock of {model_name!r}, held by {me} while `clot-hpo promote` runs; "
                    "deleted when it ends."
                ),
            )
            break
        except MlflowException as exc:
            if not is_already_exists(exc):
                raise
        held = _holder(client, name)
        if held is not None and not told and on_wait is not None:
            on_wait(f"waiting for the promotion lock of {model_name!r}, held by {held[0]}")
            told = True
        if time.monotonic() > deadline:
            who = held[0] if held else "another process"
            raise ConfigError(
                f"the promotion lock of {model_name!r} is still held by {who} after {timeout_s:.0f} s; "
                f"if that process is gone, delete the registered model {name!r} and promote again"
            )
        _break_if_stale(client, name, stale_after_s)
        time.sleep(POLL_S)
    try:
        yield me
    finally:
        try:
            held = _holder(client, name)
            if held is not None and held[1] == token:
                client.delete_registered_model(name)
        except MlflowException as exc:  # the alias already moved: a lock left behind goes stale
            log.warning("promote: could not release the lock %s: %s", name, exc)


__all__ = ["LOCK_SUFFIX", "lock_name", "promotion_lock"]
