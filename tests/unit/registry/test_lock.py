"""The promotion lock (issue 20, item 5): claims are versions of a lock model that stays.

Against a SQLite MLflow store. What the shared server adds (only the promoting role may
take or break the lock) is tested on a real basic-auth server in
tests/integration/test_shared_server_auth.py.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from clot_hpo.errors import ConfigError
from clot_hpo.registry.lock import TAG_HOLDER, TAG_SINCE, TAG_TOKEN, lock_name, promotion_lock


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return MlflowClient(uri, registry_uri=uri)


def _plant(client: MlflowClient, model: str, since: float, holder: str = "ghost pid=1") -> None:
    """A claim as another process left it, dated ``since``: a version of the lock model, and
    the lock model's own tags (where locks lived before)."""
    tags = {TAG_HOLDER: holder, TAG_TOKEN: "0" * 16, TAG_SINCE: f"{since:.3f}"}
    name = lock_name(model)
    client.create_registered_model(name, tags=tags)
    client.create_model_version(name, source="clot-hpo-lock:///promotion", tags=tags)


def claims(client: MlflowClient, model: str) -> list[Any]:
    """The live claims, the holder first (read here rather than with the module's reader)."""
    from clot_hpo.registry.lock import claims as read

    return read(client, model)


def _holders(client: MlflowClient, model: str) -> list[str]:
    versions = client.search_model_versions(f"name = '{lock_name(model)}'")
    return [v.tags[TAG_HOLDER] for v in sorted(versions, key=lambda v: int(v.version))]


def test_a_lock_dated_in_the_future_counts_as_stale(
    client: MlflowClient, caplog: pytest.LogCaptureFixture
) -> None:
    _plant(client, "m", time.time() + 30 * 86400)  # a month ahead: it would never age
    start = time.monotonic()
    with caplog.at_level(logging.WARNING), promotion_lock(client, "m", timeout_s=10) as me:
        assert _holders(client, "m") == [me]
    assert time.monotonic() - start < 10
    assert "breaking the lock m.promotion-lock held by ghost pid=1 (dated" in caplog.text
    assert "s in the future, stale)" in caplog.text


def test_a_lock_a_little_ahead_is_a_clock_difference_and_holds(client: MlflowClient) -> None:
    _plant(client, "m", time.time() + 20)  # another machine's clock, 20 s fast
    held = r"still held by ghost pid=1 after 1 s; .* delete version 1 of"
    with pytest.raises(ConfigError, match=held), promotion_lock(client, "m", timeout_s=1):
        pass
    assert [c.holder for c in claims(client, "m")] == ["ghost pid=1"]  # the waiter's claim is gone


def test_an_old_lock_is_broken_and_the_lock_model_stays(client: MlflowClient) -> None:
    _plant(client, "m", time.time() - 3600)
    with promotion_lock(client, "m", timeout_s=10, stale_after_s=600):
        assert len(claims(client, "m")) == 1
    assert claims(client, "m") == []
    assert client.get_registered_model(lock_name("m")).name == "m.promotion-lock"


def test_the_first_claim_holds_and_the_next_waits_for_it(client: MlflowClient) -> None:
    waits: list[str] = []
    with promotion_lock(client, "m") as first:
        with pytest.raises(ConfigError), promotion_lock(client, "m", timeout_s=1, on_wait=waits.append):
            pass
        assert waits == [f"waiting for the promotion lock of 'm', held by {first}"]
        assert [c.holder for c in claims(client, "m")] == [first]
    with promotion_lock(client, "m", timeout_s=1):  # released: taken at once
        pass
