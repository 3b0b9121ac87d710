"""Fixed windows anchored at the last reset, and calendar alignment, with a controllable clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from governance.metering.enforcement import Admission, Rejection
from governance.metering.live import budget_states
from governance.models import Budget
from tests.governance.conftest_counters import T0, admit, anchor_windows, path_specs, settle

pytestmark = pytest.mark.django_db(transaction=True)


def test_request_window_is_anchored_at_last_reset_not_at_the_first_request(counter_mode, make_vk):
    vk = make_vk(rate_limit={"request_max_limit": 1, "request_reset_duration": "1m"})
    anchor_windows()
    specs = path_specs(vk)
    assert isinstance(admit(specs, now=T0 + timedelta(seconds=50)), Admission)
    # The window started at T0, so it ends at T0+60s even though the first request came at +50s.
    assert isinstance(admit(specs, now=T0 + timedelta(seconds=59)), Rejection)
    assert isinstance(admit(specs, now=T0 + timedelta(seconds=60)), Admission)
    assert isinstance(admit(specs, now=T0 + timedelta(seconds=119)), Rejection)
    # Windows stay on the grid T0 + k*60s after idle periods.
    late = admit(specs, now=T0 + timedelta(seconds=605))
    assert isinstance(late, Admission)
    rejection = admit(specs, now=T0 + timedelta(seconds=610))
    assert rejection.retry_after == 50


def test_budget_usage_restarts_at_zero_when_its_window_ends(counter_mode, make_vk):
    vk = make_vk(budgets=[{"max_limit": "1", "reset_duration": "1h"}])
    anchor_windows()
    specs = path_specs(vk)
    settle(admit(specs, cost="0.9"), cost="0.9", vk=vk)
    assert isinstance(admit(specs, cost="0.2", now=T0 + timedelta(minutes=59)), Rejection)

    later = T0 + timedelta(hours=1, minutes=1)
    admission = admit(specs, cost="0.2", now=later)
    assert isinstance(admission, Admission)
    settle(admission, cost="0.15", vk=vk, now=later)

    budget = Budget.objects.get()
    assert budget.current_usage == Decimal("0.15")
    assert budget.last_reset == T0 + timedelta(hours=1)
    state = budget_states([budget.pk], now=later)[str(budget.pk)]
    assert state.usage == Decimal("0.15")
    assert (state.window_start, state.resets_at) == (T0 + timedelta(hours=1), T0 + timedelta(hours=2))


def test_calendar_aligned_daily_budget_resets_at_utc_midnight(counter_mode, make_vk):
    vk = make_vk(budgets=[{"max_limit": "1", "reset_duration": "1d", "calendar_aligned": True}])
    anchor_windows(datetime(2030, 1, 15, 12, 0, tzinfo=UTC))
    specs = path_specs(vk)
    evening = datetime(2030, 1, 15, 23, 59, 30, tzinfo=UTC)
    settle(admit(specs, cost="1", now=evening), cost="1", vk=vk, now=evening)

    rejection = admit(specs, cost="0.01", now=evening)
    assert rejection.retry_after == 30
    assert isinstance(admit(specs, cost="0.5", now=datetime(2030, 1, 16, 0, 0, 1, tzinfo=UTC)), Admission)


def test_calendar_aligned_monthly_budget_resets_on_the_first_not_after_thirty_days(counter_mode, make_vk):
    vk = make_vk(budgets=[{"max_limit": "1", "reset_duration": "1M", "calendar_aligned": True}])
    anchor_windows(datetime(2030, 1, 2, tzinfo=UTC))
    specs = path_specs(vk)
    settle(
        admit(specs, cost="1", now=datetime(2030, 1, 3, tzinfo=UTC)),
        cost="1",
        vk=vk,
        now=datetime(2030, 1, 3, tzinfo=UTC),
    )

    # 30 days later is still January: no reset.
    on_jan_31 = admit(specs, cost="0.1", now=datetime(2030, 1, 31, 23, 0, tzinfo=UTC))
    assert isinstance(on_jan_31, Rejection)
    assert on_jan_31.retry_after == 3600
    assert isinstance(admit(specs, cost="0.1", now=datetime(2030, 2, 1, 0, 0, 1, tzinfo=UTC)), Admission)


def test_calendar_aligned_weekly_budget_resets_on_monday(counter_mode, make_vk):
    vk = make_vk(budgets=[{"max_limit": "1", "reset_duration": "1w", "calendar_aligned": True}])
    anchor_windows()  # Tuesday
    specs = path_specs(vk)
    settle(admit(specs, cost="1"), cost="1", vk=vk)
    sunday_night = datetime(2030, 1, 20, 23, 0, tzinfo=UTC)
    assert isinstance(admit(specs, cost="0.1", now=sunday_night), Rejection)
    assert isinstance(admit(specs, cost="0.1", now=datetime(2030, 1, 21, 0, 0, 1, tzinfo=UTC)), Admission)


def test_settling_after_the_window_ended_charges_the_new_window_and_drops_the_old_reservation(counter_mode, make_vk):
    vk = make_vk(budgets=[{"max_limit": "1", "reset_duration": "1m"}])
    anchor_windows()
    specs = path_specs(vk)
    admission = admit(specs, cost="0.8", now=T0 + timedelta(seconds=50))
    later = T0 + timedelta(seconds=70)

    settle(admission, cost="0.3", vk=vk, now=later)

    budget = Budget.objects.get()
    assert (budget.current_usage, budget.last_reset) == (Decimal("0.3"), T0 + timedelta(seconds=60))
    assert budget_states([budget.pk], now=later)[str(budget.pk)].usage == Decimal("0.3")
