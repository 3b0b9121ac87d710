"""The ledger batch's round trips on PostgreSQL (``governance.metering.db_pipeline``).

A batch is BEGIN, a locking SELECT per counter table, the usage INSERT, the rollup upsert, an
UPDATE per counter row and COMMIT. Pipelined, the client waits on the server for BEGIN, for the
locked rows, for the INSERT's RETURNING and for the writes, then COMMITs: psycopg's pipeline
calls are counted here on the real connection.
"""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from django.db import connection

from governance.metering import enforcement
from governance.metering.enforcement import LedgerEntry, Settlement
from governance.models import Budget, RateLimit, UsageRecord, UsageRollup
from governance.models.rollups import HOUR
from tests.governance.conftest_counters import T0, admit, anchor_windows, path_specs

LIMITS = {
    "budgets": [{"max_limit": "10", "reset_duration": "1d"}],
    "rate_limit": {
        "request_max_limit": 100,
        "request_reset_duration": "1h",
        "token_max_limit": 1000,
        "token_reset_duration": "1h",
    },
}

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="pipelines are PostgreSQL's"),
]


@pytest.fixture
def waits(monkeypatch):
    """Counts the times the client waits for the server's answers in a pipeline: a flush to read
    a result, or a sync (COMMIT, leaving the pipeline). Outside a pipeline nothing is counted."""
    calls: list[str] = []
    fetch, sync = psycopg.Pipeline._fetch_gen, psycopg.Pipeline._sync_gen

    def counted_fetch(self, *, flush):
        if flush:
            calls.append("flush")
        return fetch(self, flush=flush)

    def counted_sync(self):
        calls.append("sync")
        return sync(self)

    def start():
        calls.clear()
        monkeypatch.setattr(psycopg.Pipeline, "_fetch_gen", counted_fetch)
        monkeypatch.setattr(psycopg.Pipeline, "_sync_gen", counted_sync)
        return calls

    return start


def _settlement(vk, admission, cost: str) -> Settlement:
    entry = LedgerEntry(provider="openai", model="gpt-4o-mini", status_code=200, virtual_key_id=vk.pk, prompt_tokens=5)
    return Settlement(admission, Decimal(cost), 5, True, entry)


def test_a_batch_waits_on_the_server_four_times_before_commit_and_writes_what_it_did_before(settings, make_vk, waits):
    settings.GOVERNANCE_COUNTERS = "local"
    vks = [make_vk(**LIMITS) for _ in range(4)]
    anchor_windows()
    batch = [_settlement(vk, admit(path_specs(vk), cost="0.5", tokens=10), "0.25") for vk in vks for _ in range(3)]
    assert all(isinstance(s.admission, enforcement.Admission) for s in batch)

    calls = waits()
    assert enforcement.settle_many(batch, now=T0) == [True] * 12
    # In the pipeline: BEGIN, both locking SELECTs in one trip, the INSERT's RETURNING, then the
    # upsert and all 8 UPDATEs in one trip; COMMIT follows. One statement at a time made 1 (BEGIN)
    # + 2 + 1 + 1 + 8 trips before COMMIT.
    assert calls == ["sync", "flush", "flush", "flush"]

    assert UsageRecord.objects.count() == 12
    for budget in Budget.objects.all():
        assert budget.current_usage == Decimal("0.75")
    assert {(r.token_current_usage, r.request_current_usage) for r in RateLimit.objects.all()} == {(15, 3)}
    assert sum(r.requests for r in UsageRollup.objects.filter(granularity=HOUR)) == 12


def test_an_error_in_the_pipeline_is_djangos_and_the_batch_is_written_once_after_it(settings, make_vk):
    settings.GOVERNANCE_COUNTERS = "local"
    vk, gone = make_vk(**LIMITS), make_vk(**LIMITS)
    anchor_windows()
    batch = [_settlement(key, admit(path_specs(key), cost="0.5", tokens=10), "0.25") for key in (vk, gone)]
    # The key is deleted while its request is in flight: the INSERT's foreign key fails inside
    # the pipeline, the ledger retries once without the missing reference, and keeps the usage.
    UsageRecord.objects.filter(virtual_key=gone).delete()
    type(gone).objects.filter(pk=gone.pk).delete()

    assert enforcement.settle_many(batch, now=T0) == [True, True]
    assert UsageRecord.objects.filter(virtual_key=vk).count() == 1
    assert UsageRecord.objects.filter(virtual_key__isnull=True).count() == 1
    assert Budget.objects.get(virtual_key=vk).current_usage == Decimal("0.25")
    assert not connection.connection._pipeline  # left pipeline mode
