"""A promotion lock that works across processes and machines, through the model registry itself.

Two ``clot-hpo promote`` processes must not interleave "read the champion, compare, move
the alias": the later one could move the alias to a worse model, or register a run twice.
MLflow has no compare-and-set on tags, but it numbers a registered model's versions in one
transaction (a unique key in the SQL store, whether reached directly through ``sqlite:///``
/ ``postgresql://`` or through an ``mlflow server``): each new version gets a number above
every live one. So the lock of model ``M`` is a registered model named ``M.promotion-lock``
that stays, and taking the lock is creating a version of it (ZooKeeper's sequential-node
recipe): the lowest live version holds the lock, the others wait for it, deleting one's
own version releases it. Its tags say who holds it (host, process, since when), and the
waiting process prints that.

The lock model is permanent so that its permissions can be set once: on a shared server
the compose stack creates it at start as the admin (``docker/mlflow_users.py ensure-lock``),
and with MLflow's basic-auth app only the admin (the promoting role) may then create or
delete its versions, or delete it; a reader or a worker can neither take the lock nor break
it. Without it (a local store, a first promotion) ``promote`` creates it.

A holder that died (killed, machine lost) leaves its version behind; after ``stale_after_s``
(10 minutes by default, a promotion takes seconds) a waiter deletes it. A version dated
more than :data:`MAX_CLOCK_SKEW_S` in the future counts as stale too: a negative age is no
reason to wait forever. Deleting someone else's fresh version is avoided by reading its
token just before deleting; the window between that read and the delete is the one race
left, and only for versions already past their age limit.

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
from dataclasses import dataclass

from clot_hpo.errors import ConfigError
from clot_hpo.tracking.store import MlflowClient, MlflowException, is_already_exists, is_not_found

log = logging.getLogger("clot_hpo.registry")

LOCK_SUFFIX = ".promotion-lock"
TAG_HOLDER = "clot_hpo.lock.holder"  # host pid=... token=...
TAG_TOKEN = "clot_hpo.lock.token"
TAG_SINCE = "clot_hpo.lock.since"  # Unix time the lock was asked for
# A version's source: a claim, not a model (an absolute path and no host: a server accepts it).
LOCK_SOURCE = "clot-hpo-lock:///promotion"
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_STALE_AFTER_S = 600.0
MAX_CLOCK_SKEW_S = 60.0  # clocks of machines sharing a server may differ by this much
POLL_S = 0.5


def lock_name(model_name: str) -> str:
    """The registered model that is the lock of ``model_name``."""
    return f"{model_name}{LOCK_SUFFIX}"


def lock_description(model_name: str) -> str:
    """What the lock model says about itself (in the registry's UI)."""
    return (
        f"Promotion lock of {model_name!r}: `clot-hpo promote` holds it by creating a version "
        "(the lowest live version holds it) and deletes that version when done. Do not delete."
    )


def ensure_lock_model(client: MlflowClient, model_name: str) -> bool:
    """Create the lock model of ``model_name`` unless it exists; True when it was created."""
    try:
        client.create_registered_model(lock_name(model_name), description=lock_description(model_name))
    except MlflowException as exc:
        if is_already_exists(exc):
            return False
        raise
    return True


@dataclass(frozen=True)
class Claim:
    """One version of the lock model: a process's claim on the lock."""

    version: int
    holder: str
    token: str
    since: float

    def is_stale(self, stale_after_s: float, now: float) -> bool:
        """Older than ``stale_after_s``, undated, or dated more than MAX_CLOCK_SKEW_S ahead."""
        age = now - self.since
        return not self.since or age >= stale_after_s or age < -MAX_CLOCK_SKEW_S


def claims(client: MlflowClient, model_name: str) -> list[Claim]:
    """The live claims on the lock of ``model_name``, the holder first."""
    found = []
    for version in client.search_model_versions(f"name = '{lock_name(model_name)}'"):
        tags = version.tags or {}
        try:
            since = float(tags.get(TAG_SINCE, "0"))
        except ValueError:
            since = 0.0
        found.append(
            Claim(int(version.version), tags.get(TAG_HOLDER, "unknown"), tags.get(TAG_TOKEN, ""), since)
        )
    return sorted(found, key=lambda claim: claim.version)


def _break_if_stale(client: MlflowClient, model_name: str, claim: Claim, stale_after_s: float) -> None:
    now = time.time()
    if not claim.is_stale(stale_after_s, now):
        return
    again = next((c for c in claims(client, model_name) if c.version == claim.version), None)
    if again is None or again.token != claim.token:  # released meanwhile: not ours to break
        return
    age = now - claim.since
    log.warning(
        "promote: breaking the lock %s held by %s (%s, stale)",
        lock_name(model_name),
        claim.holder,
        f"dated {-age:.0f} s in the future" if age < 0 else f"for {age:.0f} s",
    )
    try:
        client.delete_model_version(lock_name(model_name), str(claim.version))
    except MlflowException as exc:
        if not is_not_found(exc):
            raise


def _release(client: MlflowClient, model_name: str, version: int) -> None:
    try:
        client.delete_model_version(lock_name(model_name), str(version))
    except MlflowException as exc:  # the alias already moved: a claim left behind goes stale
        if not is_not_found(exc):
            log.warning("promote: could not release the lock %s: %s", lock_name(model_name), exc)


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
        stale_after_s: a claim older than this is taken to be left by a dead process.
        on_wait: called once with a sentence naming the holder when this process has to wait.

    Raises:
        ConfigError: (exit code 2) the lock stayed taken for ``timeout_s``; the message names
            the holder and the lock version to delete if that holder is gone.
        MlflowException: the registry refused the claim (PERMISSION_DENIED for a user who is
            not the promoting role; the command line turns it into one sentence).
    """
    name = lock_name(model_name)
    token = secrets.token_hex(8)
    me = f"{socket.gethostname()} pid={os.getpid()} token={token}"
    ensure_lock_model(client, model_name)
    mine = int(
        client.create_model_version(
            name,
            source=LOCK_SOURCE,
            tags={TAG_HOLDER: me, TAG_TOKEN: token, TAG_SINCE: f"{time.time():.3f}"},
            description=f"held by {me} while `clot-hpo promote` runs",
        ).version
    )
    try:
        deadline = time.monotonic() + timeout_s
        told = False
        while True:
            ahead = [c for c in claims(client, model_name) if c.version < mine]
            if not ahead:
                break
            holder = ahead[0]
            if not told and on_wait is not None:
                on_wait(f"waiting for the promotion lock of {model_name!r}, held by {holder.holder}")
                told = True
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"the promotion lock of {model_name!r} is still held by {holder.holder} after "
                    f"{timeout_s:.0f} s; if that process is gone, delete version {holder.version} of the "
                    f"registered model {name!r} and promote again"
                )
            _break_if_stale(client, model_name, holder, stale_after_s)
            time.sleep(POLL_S)
        yield me
    finally:
        _release(client, model_name, mine)


__all__ = [
    "LOCK_SUFFIX",
    "MAX_CLOCK_SKEW_S",
    "Claim",
    "claims",
    "ensure_lock_model",
    "lock_name",
    "promotion_lock",
]
