"""Usage rollups: added in the ledger's own transaction, exact, never twice, rebuilt from the ledger."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

from governance.metering import rollups
from governance.metering.usage_rows import insert_usage_rows
from governance.models import UsageRecord, UsageRollup
from governance.models.rollups import DAY, HOUR, NONE

pytestmark = pytest.mark.django_db(transaction=True)

AT = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)


def row(**fields) -> dict:
    base = {
        "provider": "openai",
        "model": "gpt-4o",
        "status_code": 200,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "cost": Decimal("0.0000000123"),
        "latency_ms": 40,
        "created_at": AT,
    }
    return base | fields


def insert(rows: list[dict]) -> None:
    with transaction.atomic():
        insert_usage_rows(rows)


def test_each_inserted_row_is_added_to_its_hour_and_its_day_exactly():
    insert([row(), row(cost=Decimal("0.3333333333"), streamed=True), row(created_at=AT + timedelta(hours=1))])
    hour = UsageRollup.objects.get(granularity=HOUR, bucket=rollups.hour_of(AT))
    assert (hour.requests, hour.prompt_tokens, hour.total_tokens, hour.latency_ms, hour.streamed) == (2, 20, 30, 80, 1)
    assert hour.cost == Decimal("0.3333333456")  # to the ledger's last decimal, on SQLite too
    day = UsageRollup.objects.get(granularity=DAY, bucket=rollups.day_of(AT))
    assert (day.requests, day.bucket, day.virtual_key_id) == (3, datetime(2026, 3, 4, tzinfo=UTC), NONE)
    assert day.cost == Decimal("0.3333333579")
    assert rollups.differences() == []


def test_a_retried_row_is_not_counted_twice():
    first = row(request_id=uuid.uuid4())
    insert([first])
    insert([dict(first), row()])  # the same request again, and a new one
    assert UsageRecord.objects.filter(created_at=AT).count() == 2
    assert UsageRollup.objects.get(granularity=DAY, bucket=rollups.day_of(AT)).requests == 2
    assert rollups.differences() == []


def test_refusals_errors_and_unpriced_rows_have_rollups_of_their_own():
    insert(
        [
            row(status_code=402, error_type="budget_exceeded", upstream_reached=False, cost=0, total_tokens=0),
            row(status_code=502, error_type="upstream_error", cost=0, total_tokens=0),
            row(priced=False, cost=0),
        ]
    )
    days = {(r.status_code, r.refused): r for r in UsageRollup.objects.filter(granularity=DAY)}
    assert set(days) == {(402, True), (502, False), (200, False)}
    assert days[(200, False)].unpriced == 1 and days[(502, False)].unpriced == 0


def test_rebuild_restores_rollups_and_check_finds_a_difference(capsys):
    insert([row(), row(model="gpt-4o-mini", status_code=429, error_type="request_limited", upstream_reached=False)])
    UsageRollup.objects.filter(granularity=HOUR).update(requests=7)
    assert len(rollups.differences()) == 2
    with pytest.raises(CommandError, match="2 rollup rows differ"):
        call_command("rebuild_rollups", "--check")
    call_command("rebuild_rollups")
    call_command("rebuild_rollups", "--check")
    assert "rollups match" in capsys.readouterr().out
    assert sorted(UsageRollup.objects.values_list("granularity", "requests", "refused")) == [
        ("d", 1, False),
        ("d", 1, True),
        ("h", 1, False),
        ("h", 1, True),
    ]


def test_rebuild_of_recent_days_leaves_older_rollups_alone():
    old = AT - timedelta(days=30)
    insert([row(created_at=old), row(created_at=datetime.now(UTC))])
    UsageRecord.objects.filter(created_at=old).delete()  # purged: its rollups stay as history
    call_command("rebuild_rollups", "--days", "2")
    assert UsageRollup.objects.filter(bucket__lt=AT).count() == 2
    assert UsageRollup.objects.filter(bucket__gte=AT).count() == 2


@pytest.mark.django_db
def test_a_request_whose_worker_died_is_an_error_in_every_figure():
    from django.utils import timezone

    from governance.api.logs import status_of
    from governance.usage_stats import UsageFilter, total

    now = timezone.now()
    died = UsageRecord.objects.create(created_at=now, provider="openai", model="gpt-4o", status_code=0)
    UsageRecord.objects.create(created_at=now, provider="openai", model="gpt-4o", status_code=200)
    window = UsageFilter(start=now - timedelta(hours=3), end=now + timedelta(hours=1))

    figures = total(window)  # the edges come from the ledger, whole hours from the rollups
    assert (figures.requests, figures.successes, figures.errors) == (2, 1, 1)
    errors = UsageFilter(start=window.start, end=window.end, statuses=["error"])
    assert list(UsageRecord.objects.filter(errors.ledger_q())) == [died]
    assert status_of(died) == "error"


def test_every_value_is_stored_exactly_and_text_a_column_cannot_hold_does_not_fail_the_batch():
    vk_less = row(
        request_id=uuid.uuid4(),
        model="gpt-4o\x00evil",  # a client's model name: PostgreSQL text cannot hold NUL
        error_message="upstream said \ud800 then \x00",  # a lone surrogate from a client's JSON
        http_request_id="req-é-1",
        cost=Decimal("0.0000000001"),
        input_cost=Decimal("1E-10"),
        output_cost=Decimal("0"),
        created_at=datetime(2026, 3, 4, 10, 30, 59, 999999, tzinfo=UTC),
        upstream_reached=None,
        price_source=None,
    )
    plain = row(request_id=uuid.uuid4(), model="gpt-😀", cost=Decimal("12345.6789012345"), streamed=True, priced=False)
    insert([vk_less, plain])

    stored = UsageRecord.objects.get(request_id=vk_less["request_id"])
    assert stored.model == "gpt-4o\ufffdevil"
    assert stored.error_message == "upstream said ? then \ufffd" and stored.http_request_id == "req-é-1"
    assert (stored.cost, stored.input_cost, stored.output_cost) == (Decimal("1E-10"), Decimal("1E-10"), Decimal("0"))
    assert stored.created_at == datetime(2026, 3, 4, 10, 30, 59, 999999, tzinfo=UTC)
    assert stored.upstream_reached is None and stored.price_source is None
    other = UsageRecord.objects.get(request_id=plain["request_id"])
    assert (other.cost, other.streamed, other.priced, other.model) == (
        Decimal("12345.6789012345"),
        True,
        False,
        "gpt-😀",
    )
    # The rollups key on the same stored text.
    assert UsageRollup.objects.filter(granularity=DAY, model="gpt-4o\ufffdevil").get().requests == 1
    assert rollups.differences() == []
