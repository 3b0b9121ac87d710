"""The ledger: one UsageRecord per finished request, idempotent, and database counters in step.

Also the settle/release rules: failed upstream calls cost nothing, a request counts against
request limits only if the upstream was called, and live reads and manual resets.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest

from governance.metering import enforcement
from governance.metering.enforcement import Admission, LedgerEntry, Rejection
from governance.metering.live import budget_states, budget_usage, rate_limit_usage
from governance.models import Budget, RateLimit, UsageRecord
from governance.services.limits import budget_reset_usage
from tests.governance.conftest_counters import LIMITS, T0, admit, anchor_windows, ledger_total, path_specs, settle

pytestmark = pytest.mark.django_db(transaction=True)


def test_settle_writes_one_usage_record_with_what_the_request_did(counter_mode, make_vk):
    vk = make_vk(**LIMITS)
    anchor_windows()
    admission = admit(path_specs(vk), cost="0.5", tokens=300)
    entry = LedgerEntry(
        provider="openai",
        model="gpt-4o",
        status_code=200,
        virtual_key_id=vk.pk,
        prompt_tokens=100,
        completion_tokens=50,
        cached_tokens=20,
        latency_ms=321,
        streamed=True,
        priced=False,
    )

    assert enforcement.settle(
        admission, actual_cost=Decimal("0.0123"), actual_tokens=150, upstream_called=True, entry=entry, now=T0
    )

    record = UsageRecord.objects.get()
    assert str(record.request_id) == admission.request_id
    assert (record.provider, record.model, record.status_code) == ("openai", "gpt-4o", 200)
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens, record.total_tokens) == (
        100,
        50,
        20,
        150,
    )
    assert (record.cost, record.latency_ms, record.streamed, record.priced) == (Decimal("0.0123"), 321, True, False)
    assert record.virtual_key_id == vk.pk and record.created_at == T0
    assert Budget.objects.get().current_usage == Decimal("0.0123")
    rate_limit = RateLimit.objects.get()
    assert (rate_limit.token_current_usage, rate_limit.request_current_usage) == (150, 1)


def test_settling_twice_or_recording_the_same_request_again_charges_once(counter_mode, make_vk):
    vk = make_vk(**LIMITS)
    anchor_windows()
    specs = path_specs(vk)
    admission = admit(specs, cost="0.5")
    assert settle(admission, cost="0.3", vk=vk) is True
    assert settle(admission, cost="0.3", vk=vk) is False

    # A second admission that reuses the request id (a retried ledger write) releases its
    # reservation and charges nothing.
    retry = admit(specs, cost="0.5")
    retry.request_id = admission.request_id
    assert settle(retry, cost="0.3", vk=vk) is False

    assert UsageRecord.objects.count() == 1
    assert Budget.objects.get().current_usage == Decimal("0.3") == ledger_total()
    assert budget_usage([Budget.objects.get().pk], now=T0)[str(Budget.objects.get().pk)] == Decimal("0.3")


def test_a_failed_upstream_call_costs_nothing_but_counts_one_request(counter_mode, make_vk):
    vk = make_vk(**LIMITS)
    anchor_windows()
    specs = path_specs(vk)
    admission = admit(specs, cost="0.9", tokens=500)

    settle(admission, cost="0", tokens=0, vk=vk, status_code=502)

    assert UsageRecord.objects.get().status_code == 502
    assert Budget.objects.get().current_usage == Decimal("0")
    assert RateLimit.objects.get().token_current_usage == 0
    assert RateLimit.objects.get().request_current_usage == 1
    assert isinstance(admit(specs, cost="1"), Admission)  # the whole budget is free again


def test_a_request_released_before_the_upstream_call_gives_everything_back(counter_mode, make_vk):
    vk = make_vk(**LIMITS)
    anchor_windows()
    specs = path_specs(vk)
    first, second = admit(specs, cost="0.5"), admit(specs, cost="0.5")
    assert admit(specs).type == "request_limited"

    enforcement.release(first, now=T0)

    assert UsageRecord.objects.count() == 0
    state = rate_limit_usage([RateLimit.objects.get().pk], now=T0)[str(RateLimit.objects.get().pk)]
    assert state.requests.usage == 1
    assert budget_usage([Budget.objects.get().pk], now=T0)[str(Budget.objects.get().pk)] == Decimal("0.5")
    assert isinstance(admit(specs, cost="0.5"), Admission)
    enforcement.release(second, now=T0)


def test_settle_refuses_to_charge_without_a_ledger_entry_and_changes_nothing(counter_mode, make_vk):
    vk = make_vk(**LIMITS)
    anchor_windows()
    admission = admit(path_specs(vk), cost="0.5")

    with pytest.raises(ValueError, match="LedgerEntry"):
        enforcement.settle(admission, actual_cost=Decimal("0.1"), actual_tokens=5, upstream_called=True)

    assert admission.state == "open"
    assert UsageRecord.objects.count() == 0


def test_a_not_called_request_with_an_entry_is_recorded_at_zero_and_not_counted(counter_mode, make_vk):
    vk = make_vk(**LIMITS)
    anchor_windows()
    admission = admit(path_specs(vk), cost="0.5")

    settle(admission, cost="0.4", tokens=10, vk=vk, upstream_called=False, status_code=400)

    record = UsageRecord.objects.get()
    assert (record.status_code, record.cost, record.total_tokens) == (400, Decimal("0"), 0)
    assert RateLimit.objects.get().request_current_usage == 0
    assert Budget.objects.get().current_usage == Decimal("0")


def test_live_usage_shows_requests_in_flight_and_their_windows(counter_mode, make_vk):
    vk = make_vk(**LIMITS)
    anchor_windows()
    admission = admit(path_specs(vk), cost="0.25", tokens=40, now=T0 + timedelta(minutes=10))
    rate_limit, budget = RateLimit.objects.get(), Budget.objects.get()

    live = rate_limit_usage([rate_limit.pk, uuid.uuid4()], now=T0 + timedelta(minutes=10))
    budget_state = budget_states([budget.pk], now=T0)[str(budget.pk)]

    state = live[str(rate_limit.pk)]
    assert list(live) == [str(rate_limit.pk)]
    assert (state.tokens.usage, state.tokens.limit, state.tokens.reset_duration) == (40, 1000, "1h")
    assert (state.requests.usage, state.requests.window_start, state.requests.resets_at) == (
        1,
        T0,
        T0 + timedelta(hours=1),
    )
    assert (budget_state.usage, budget_state.limit, budget_state.resets_at) == (
        Decimal("0.25"),
        Decimal("1"),
        T0 + timedelta(days=1),
    )
    settle(admission, cost="0.1", tokens=30, vk=vk)
    assert budget_usage([budget.pk], now=T0)[str(budget.pk)] == Decimal("0.1")


def test_reset_budget_zeroes_usage_in_the_database_and_the_hot_copy(counter_mode, make_vk):
    vk = make_vk(**LIMITS)
    anchor_windows()
    specs = path_specs(vk)
    settle(admit(specs, cost="1"), cost="1", vk=vk)
    assert isinstance(admit(specs, cost="0.1"), Rejection)
    budget = Budget.objects.get()

    reset = budget_reset_usage(budget=budget, now=T0 + timedelta(minutes=5))

    assert (reset.current_usage, reset.last_reset) == (Decimal("0"), T0 + timedelta(minutes=5))
    assert budget_usage([budget.pk], now=T0 + timedelta(minutes=6))[str(budget.pk)] == Decimal("0")
    assert isinstance(admit(specs, cost="0.9", now=T0 + timedelta(minutes=6)), Admission)


def test_rebuild_counters_without_redis_says_there_is_nothing_to_rebuild(settings, db):
    import io

    from django.core.management import call_command

    settings.GOVERNANCE_COUNTERS = "database"
    out = io.StringIO()
    call_command("rebuild_counters", stdout=out)
    assert "nothing to rebuild" in out.getvalue()


def test_a_batch_keeps_the_usage_of_a_key_deleted_while_its_request_was_in_flight(counter_mode, make_vk):
    vk = make_vk(**LIMITS)
    other = make_vk(name="other", **LIMITS)
    anchor_windows()
    gone = admit(path_specs(vk), cost="0.1", tokens=10)
    kept = admit(path_specs(other), cost="0.1", tokens=10)
    gone_id = vk.pk
    vk.delete()  # its budget and rate limit go with it; the request is still in flight
    settled = enforcement.settle_many(
        [
            enforcement.Settlement(
                admission, Decimal("0.05"), 10, True, LedgerEntry("openai", "gpt-4o", 200, virtual_key_id=key_id)
            )
            for admission, key_id in ((gone, gone_id), (kept, other.pk))
        ],
        now=T0,
    )
    assert settled == [True, True]
    records = {r.virtual_key_id: r for r in UsageRecord.objects.all()}
    assert set(records) == {None, other.pk}
    assert records[None].cost == records[other.pk].cost == Decimal("0.05")
    assert Budget.objects.get().current_usage == Decimal("0.05")


def test_a_batch_moves_each_counter_row_by_the_sum_of_its_requests_in_their_current_window(counter_mode, make_vk):
    vk = make_vk(
        budgets=[{"max_limit": "10", "reset_duration": "1d"}],
        rate_limit={
            "request_max_limit": 100,
            "request_reset_duration": "1h",
            "token_max_limit": 100_000,
            "token_reset_duration": "1h",
        },
    )
    anchor_windows(T0 - timedelta(hours=2))  # by T0 the hourly windows have ended, the daily one has not
    Budget.objects.update(current_usage=Decimal("1.5"))
    RateLimit.objects.update(token_current_usage=500, request_current_usage=7)
    admissions = [admit(path_specs(vk), cost="0.2", tokens=50) for _ in range(3)]
    # The token limit's window is edited while these requests run: the last one carries a daily window.
    RateLimit.objects.update(token_reset_duration="1d")
    admissions.append(admit(path_specs(vk), cost="0.2", tokens=50))
    entry = LedgerEntry("openai", "gpt-4o", 200, virtual_key_id=vk.pk)
    amounts = [("0.01", 10, True), ("0.02", 20, True), ("0.03", 30, True), ("0.04", 40, False)]

    settled = enforcement.settle_many(
        [
            enforcement.Settlement(admission, Decimal(cost), tokens, called, entry)
            for admission, (cost, tokens, called) in zip(admissions, amounts, strict=True)
        ],
        now=T0,
    )

    assert settled == [True] * 4
    assert Budget.objects.get().current_usage == Decimal("1.56")  # the last one never reached the upstream
    rate_limit = RateLimit.objects.get()
    assert (rate_limit.token_current_usage, rate_limit.request_current_usage) == (60, 3)
    assert (rate_limit.token_last_reset, rate_limit.request_last_reset) == (T0, T0)
    assert UsageRecord.objects.count() == 4 and ledger_total() == Decimal("0.06")
