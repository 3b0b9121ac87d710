"""The host-local counter table (embedded mode's hot counters).

What is proven here: the table itself (lookups, expiry, reuse, a file of another format, a full
table), that separate processes sharing the file admit exactly the limit, that the backend is
chosen by the rule in ``governance.metering.counters``, that a full table falls back to the exact database
counters and rebuilds from the database afterwards, and that ``rebuild_counters`` works on it.
The backend's enforcement rules run through every ``counter_mode`` test (the ``local`` case) and
through the live-server tests in embedded mode.
"""

from __future__ import annotations

import io
import os
import struct
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection

from governance.metering.counters import (
    LocalCounters,
    database_counters,
    hot_counters,
    local_table_path,
    primary_counters,
    redis_backend,
)
from governance.metering.counters.base import REQUESTS, Counter
from governance.metering.counters.local_backend import _admit as admit_script
from governance.metering.counters.local_backend import _Script
from governance.metering.counters.local_store import MAGIC, Record, SharedTable, StoreError, key_digest
from governance.metering.counters.redis_backend import counter_key, fixed_parts, window_args
from governance.metering.enforcement import Admission
from governance.models import Budget
from tests.governance.conftest_counters import T0, admit, anchor_windows, ledger_total, path_specs, settle

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def local_mode(settings):
    settings.GOVERNANCE_COUNTERS = "local"
    backend = hot_counters()
    assert isinstance(backend, LocalCounters)
    return backend


@pytest.fixture(autouse=True)
def _retry_at_once(monkeypatch):
    monkeypatch.setattr(redis_backend, "RETRY_SECONDS", 0)


def test_records_expire_are_deleted_and_their_slots_reused(tmp_path):
    table = SharedTable(str(tmp_path / "t.counters"), slots=8)
    a, b = key_digest("a"), key_digest("b")
    with table.locked() as t:
        t.put(a, Record(5, 1000, 7, 0, 0, expiry=2000), now_ms=1000)
        assert t.get(a, 1999) == Record(5, 1000, 7, 0, 0, 2000)
        assert t.get(a, 2000) is None  # expired reads as absent
        t.put(b, Record(1, 0, 1, 0, 0, expiry=9000), now_ms=2500)
        t.put(a, Record(6, 0, 2, 0, 0, expiry=9000), now_ms=2500)
        assert t.get(a, 2500).usage == 6 and t.get(b, 2500).usage == 1
        t.delete(a)
        assert t.get(a, 2500) is None and t.get(b, 2500).usage == 1


def test_a_full_table_says_so_instead_of_overwriting(tmp_path):
    table = SharedTable(str(tmp_path / "t.counters"), slots=4)
    with table.locked() as t:
        for name in "abcd":
            t.put(key_digest(name), Record(1, 0, 1, 0, 0, expiry=10**15), now_ms=0)
        with pytest.raises(StoreError, match="full"):
            t.put(key_digest("e"), Record(1, 0, 1, 0, 0, expiry=10**15), now_ms=0)
        assert all(t.get(key_digest(name), 0).usage == 1 for name in "abcd")


def test_a_file_of_another_format_is_reset_and_the_table_opens_empty(tmp_path):
    path = tmp_path / "t.counters"
    path.write_bytes(b"not a counter table")
    table = SharedTable(str(path), slots=8)
    with table.locked() as t:
        assert t.epoch == 0 and t.get(key_digest("a"), 0) is None
    assert path.read_bytes()[: len(MAGIC)] == MAGIC


def test_processes_sharing_the_file_admit_exactly_the_limit(tmp_path):
    """Forked processes hammer one request limit of 50 through the same file: exactly 50 pass."""
    path = str(tmp_path / "t.counters")
    counter = Counter(REQUESTS, "limit", "VK", 50, "1h", False, 0)
    key = counter_key(counter)
    now = 1_900_000_000_000
    # now, keep, no lease (request id, payload, registration, slot), then the counter.
    args = [now, 1000, "", "", 0, -1, "r", 50, 1, *window_args(counter, fixed_parts(counter)[3], T0)]
    with SharedTable(path).locked() as t:
        t.put(key_digest(key), Record(0, now, 1, 0, 0, expiry=now + 10**7), now_ms=0)
    children = []
    for _ in range(4):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: its own map and descriptors (opened after the fork)
            os.close(read)
            script = _Script(SharedTable(path), admit_script)
            granted = sum(script(keys=["epoch", "lease", "owners", key], args=args)[0] == "ok" for _ in range(40))
            os.write(write, struct.pack("<i", granted))
            os._exit(0)
        os.close(write)
        children.append((pid, read))
    granted = 0
    for pid, read in children:
        granted += struct.unpack("<i", os.read(read, 4))[0]
        os.waitpid(pid, 0)
    assert granted == 50
    with SharedTable(path).locked() as t:
        assert t.get(key_digest(key), now).usage == 50


def test_auto_without_redis_picks_the_local_table_on_sqlite_and_the_rows_on_a_server(settings):
    settings.GOVERNANCE_COUNTERS, settings.REDIS_URL = "auto", None
    backend = primary_counters()
    if connection.vendor == "sqlite":
        assert isinstance(backend, LocalCounters)
        assert backend.table.path == local_table_path() == connection.settings_dict["NAME"] + ".counters"
    else:  # a database server may be shared by several hosts: a host-local table would not do
        assert backend is database_counters()
    settings.GOVERNANCE_COUNTERS = "local"
    assert isinstance(primary_counters(), LocalCounters)
    settings.GOVERNANCE_COUNTERS = "database"
    assert primary_counters() is database_counters()


def test_local_counters_enforce_and_keep_the_database_rows_exact(local_mode, make_vk):
    vk = make_vk(
        budgets=[{"max_limit": "1", "reset_duration": "1d"}],
        rate_limit={"request_max_limit": 3, "request_reset_duration": "1h"},
    )
    anchor_windows()
    specs = path_specs(vk)
    for _ in range(3):
        admission = admit(specs, cost="0.3")
        assert isinstance(admission, Admission) and admission.backend == "local"
        settle(admission, cost="0.25", vk=vk)
    assert admit(specs).message == "Rate limit check failed: VK request limit exceeded (3/3, resets every 1h)"
    budget = Budget.objects.get(virtual_key=vk)
    assert budget.current_usage == Decimal("0.75") == ledger_total(virtual_key=vk)


def test_a_full_table_falls_back_to_the_database_then_rebuilds_from_it(local_mode, make_vk, monkeypatch):
    vk = make_vk(rate_limit={"request_max_limit": 4, "request_reset_duration": "1h"})
    anchor_windows()
    specs = path_specs(vk)
    settle(admit(specs), vk=vk)  # one request through the local table

    def full(*args, **kwargs):
        raise StoreError("the counter table is full")

    monkeypatch.setattr(local_mode, "_admit", full)
    during = admit(specs)
    assert during.backend == "database"  # exact fallback, not an open door
    settle(during, vk=vk)
    monkeypatch.undo()
    monkeypatch.setattr(redis_backend, "RETRY_SECONDS", 0)

    # Back on the table: the epoch was bumped, so the counter is rebuilt with the fallback's request.
    assert isinstance(admit(specs), Admission)
    assert isinstance(admit(specs), Admission)
    rejection = admit(specs)
    assert rejection.message == "Rate limit check failed: VK request limit exceeded (4/4, resets every 1h)"


def test_rebuild_counters_command_invalidates_the_local_table(local_mode, make_vk):
    vk = make_vk(rate_limit={"request_max_limit": 2, "request_reset_duration": "1h"})
    anchor_windows()
    specs = path_specs(vk)
    settle(admit(specs), vk=vk)
    out = io.StringIO()
    call_command("rebuild_counters", stdout=out)
    assert "local counters invalidated (epoch " in out.getvalue()
    assert isinstance(admit(specs), Admission)  # rebuilt from the row: one used, one left
    assert admit(specs).message == "Rate limit check failed: VK request limit exceeded (2/2, resets every 1h)"
