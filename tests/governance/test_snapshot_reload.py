"""Expired configuration snapshots: one thread reloads, the others are not held up; TTL 0 never caches."""

from __future__ import annotations

import time

import pytest

from governance.keys import digest
from governance.metering import snapshot
from governance.services import virtual_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def key_value(settings):
    # No Redis: its invalidation listener clears the cache on (re)connect, at any moment.
    settings.REDIS_URL = None
    snapshot.invalidate_local()
    return virtual_key_create(name="reload")[1]


def _cache_expired(value: str):
    """Put an expired snapshot of the key in the cache, as if loaded an hour ago; returns it."""
    snap = snapshot._load_virtual_key(digest(value))
    snapshot._vks[digest(value)] = (time.monotonic() - 3600, snap)
    return snap


def test_while_one_thread_reloads_an_expired_key_the_others_get_the_expired_copy(key_value, settings):
    settings.GOVERNANCE_CONFIG_CACHE_SECONDS = 5
    first = _cache_expired(key_value)
    claim = ("vk", digest(key_value))
    assert snapshot._claim_reload(claim)  # another thread is reloading it
    try:
        assert snapshot.virtual_key(key_value) is first
    finally:
        snapshot._reloaded(claim)
    reloaded = snapshot.virtual_key(key_value)  # nobody reloading: this call reloads
    assert reloaded is not first and reloaded == first


def test_a_ttl_of_zero_never_serves_a_cached_copy(key_value, settings):
    settings.GOVERNANCE_CONFIG_CACHE_SECONDS = 0
    first = _cache_expired(key_value)
    claim = ("vk", digest(key_value))
    assert snapshot._claim_reload(claim)
    try:
        assert snapshot.virtual_key(key_value) is not first
    finally:
        snapshot._reloaded(claim)
