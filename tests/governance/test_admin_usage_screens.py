"""The usage records list (the logs), a record's page and the dashboard: outcome and time filters
with real refusals, refusal reasons, charts in buckets that suit the selection, and the links
between the screens."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse
from django.utils import timezone

from governance.admin import usage_chart
from governance.dashboard.charts import MAX_BAR
from governance.metering import snapshot
from governance.metering.enforcement import Rejection
from governance.models import Budget, RateLimit, UsageRecord
from governance.services import customer_create, team_create, virtual_key_create
from proxy import accounting, errors
from proxy.routing import ROUTES
from tests.governance.conftest_counters import admit as counters_admit
from tests.governance.conftest_counters import path_specs

pytestmark = pytest.mark.django_db

LIST = reverse("admin:governance_usagerecord_changelist")
DASHBOARD = reverse("governance-usage-dashboard")


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def ledger():
    """A success, an upstream error and two refusals of the last minutes; older successes."""
    acme = customer_create(name="Acme")
    team = team_create(
        name="Search", customer=acme, rate_limit={"request_max_limit": 5, "request_reset_duration": "1m"}
    )
    vk, _ = virtual_key_create(name="search-api", team=team, budgets=[{"max_limit": 1, "reset_duration": "1d"}])
    other, _ = virtual_key_create(name="billing", customer=acme)
    budget = Budget.objects.get(virtual_key=vk)
    limit = RateLimit.objects.get(team=team)
    now = timezone.now()

    def add(key, minutes_ago, status=200, model="gpt-4o", **fields):
        return UsageRecord.objects.create(
            created_at=now - timedelta(minutes=minutes_ago),
            virtual_key=key,
            team=key.team,
            customer=acme,
            provider="openai",
            model=model,
            status_code=status,
            total_tokens=100 if status == 200 else 0,
            cost=Decimal("0.01") if status == 200 else Decimal(0),
            latency_ms=250,
            **fields,
        )

    rows = {
        "success": add(vk, 10),
        "error": add(vk, 20, 502, error_type="upstream_error", error_message="upstream provider 'openai' failed"),
        "budget": add(
            vk,
            30,
            402,
            error_type="budget_exceeded",
            error_message="Budget exceeded: VK search-api budget exceeded: $1.00 of $1.00 used <b>",
            refused_by=f"virtual_key:budget:{budget.pk}",
            upstream_reached=False,
        ),
        "rate": add(
            other,
            40,
            429,
            model="gpt-4o-mini",
            error_type="request_limited",
            error_message="Rate limit check failed: team Search request limit exceeded",
            refused_by=f"team:rate_limit:{limit.pk} customer:budget:{budget.pk} odd-word",
            upstream_reached=False,
        ),
        "five_hours": add(vk, 5 * 60),
        "three_days": add(vk, 3 * 24 * 60),
        "ten_days": add(other, 10 * 24 * 60),
    }
    return {"vk": vk, "other": other, "budget": budget, "limit": limit, "rows": rows}


def listed(client, **params) -> set[int]:
    response = client.get(LIST, params)
    assert response.status_code == 200
    return {record.pk for record in response.context["cl"].result_list}


def pks(ledger, *names) -> set[int]:
    return {ledger["rows"][name].pk for name in names}


def test_the_outcome_filter_splits_successes_errors_and_refusals(admin_client, ledger):
    assert listed(admin_client, outcome="refused") == pks(ledger, "budget", "rate")
    assert listed(admin_client, outcome="error") == pks(ledger, "error")
    assert listed(admin_client, outcome="success") == pks(ledger, "success", "five_hours", "three_days", "ten_days")
    assert len(listed(admin_client)) == 7
    assert len(listed(admin_client, outcome="bogus")) == 7


def test_a_refusal_written_by_the_proxy_is_listed_as_refused_with_its_limit(admin_client, ledger):
    """The row the proxy writes when the counters refuse (``accounting.refused``), not a hand-made one."""
    vk = ledger["vk"]
    snapshot.invalidate_local()
    seen = snapshot.virtual_key_by_digest(vk.value_digest)
    rejection = counters_admit(path_specs(vk), cost="5", now=timezone.now())
    assert isinstance(rejection, Rejection) and rejection.type == "budget_exceeded"
    accounting.refused(
        errors.refusal(rejection),
        request_id="trace-real",
        route=ROUTES["/v1/chat/completions"],
        vk=seen,
        model="gpt-4o",
    )
    record = UsageRecord.objects.get(http_request_id="trace-real")
    assert record.pk in listed(admin_client, outcome="refused", since="1h")
    assert record.pk not in listed(admin_client, outcome="error") | listed(admin_client, outcome="success")
    row = row_of(admin_client.get(LIST, {"outcome": "refused"}).content.decode(), record)
    assert "refused · budget</span>" in row and "402 · VK budget<" in row


def test_the_since_filter_keeps_the_last_hour_day_or_week(admin_client, ledger):
    assert listed(admin_client, since="1h") == pks(ledger, "success", "error", "budget", "rate")
    assert listed(admin_client, since="24h") == pks(ledger, "success", "error", "budget", "rate", "five_hours")
    assert listed(admin_client, since="7d") == pks(
        ledger, "success", "error", "budget", "rate", "five_hours", "three_days"
    )
    assert listed(admin_client, since="1h", outcome="error") == pks(ledger, "error")


def test_the_key_pages_link_to_its_records_still_works(admin_client, ledger):
    assert listed(admin_client, virtual_key__id__exact=str(ledger["other"].pk)) == pks(ledger, "rate", "ten_days")


def test_a_bad_date_filter_is_the_admins_error_redirect_not_a_500(admin_client, ledger):
    response = admin_client.get(LIST, {"created_at__gte": "not-a-date"})
    assert response.status_code == 302 and "e=1" in response["Location"]


def row_of(html: str, record: UsageRecord) -> str:
    link = reverse("admin:governance_usagerecord_change", args=[record.pk])
    return html.split(f'href="{link}')[1].split("</tr>")[0]


def test_refusals_show_the_reason_and_the_limits_that_refused(admin_client, ledger):
    html = admin_client.get(LIST).content.decode()
    budget = row_of(html, ledger["rows"]["budget"])
    assert "refused · budget</span>" in budget and "402 · VK budget<" in budget
    assert 'title="Budget exceeded: VK search-api budget exceeded: $1.00 of $1.00 used &lt;b&gt;"' in budget
    rate = row_of(html, ledger["rows"]["rate"])
    assert "refused · rate limit</span>" in rate
    assert "429 · team rate limit (requests), customer budget, odd-word<" in rate
    error = row_of(html, ledger["rows"]["error"])
    assert 'gov-badge-over" title="upstream provider &#x27;openai&#x27; failed">502<' in error
    assert "upstream_error" in error
    success = row_of(html, ledger["rows"]["success"])
    assert 'gov-badge-ok">200<' in success and "$0.01" in success and "250 ms" in success
    assert "billing" in rate and "customer Acme" in rate and "team Search" in budget


def test_a_refusals_page_shows_its_message_and_links_each_limit(admin_client, ledger):
    record = ledger["rows"]["rate"]
    record.http_request_id = "trace-42"
    record.save(update_fields=["http_request_id"])
    html = admin_client.get(reverse("admin:governance_usagerecord_change", args=[record.pk])).content.decode()
    assert "Rate limit check failed: team Search request limit exceeded" in html
    assert f'href="{reverse("admin:governance_ratelimit_change", args=[ledger["limit"].pk])}"' in html
    assert f'href="{reverse("admin:governance_budget_change", args=[ledger["budget"].pk])}"' in html
    assert ">team rate limit (requests)</a>" in html and "<li>odd-word</li>" in html
    assert str(record.request_id) in html and "<code>trace-42</code>" in html
    assert f'href="{LIST}?q=trace-42"' in html


def test_a_success_page_shows_the_cost_breakdown_and_reasoning_tokens(admin_client, ledger):
    record = ledger["rows"]["success"]
    UsageRecord.objects.filter(pk=record.pk).update(
        prompt_tokens=1200,
        completion_tokens=800,
        total_tokens=2000,
        cached_tokens=200,
        reasoning_tokens=300,
        input_cost=Decimal("0.0025"),
        output_cost=Decimal("0.0075"),
        price_source="catalog:openai/gpt-4o",
    )
    html = admin_client.get(reverse("admin:governance_usagerecord_change", args=[record.pk])).content.decode()
    assert "1,200 (cached: 200)" in html and "800 (reasoning: 300)" in html and "2,000" in html
    assert "input $0.0025 · output $0.0075" in html
    assert '$0.0100 <span class="quiet">at catalog:openai/gpt-4o</span>' in html


def test_searching_a_client_request_id_finds_every_attempt(admin_client, ledger):
    UsageRecord.objects.filter(pk__in=pks(ledger, "budget", "success")).update(http_request_id="trace-7")
    assert listed(admin_client, q="trace-7") == pks(ledger, "budget", "success")


# --- the charts above the list ------------------------------------------------------------------


def bars(svg: str) -> list[float]:
    """The widths of the bars (the first rect of each bar group) of one chart."""
    return [
        float(w) for w in re.findall(r'<g class="bf-bar-group"><title>[^<]*</title><rect [^>]*width="([\d.]+)"', svg)
    ]


def test_one_day_selected_in_the_date_hierarchy_is_charted_per_hour(admin_client, ledger):
    today = timezone.now().astimezone(UTC)
    response = admin_client.get(
        LIST, {"created_at__year": today.year, "created_at__month": today.month, "created_at__day": today.day}
    )
    context = response.context
    assert context["chart_step"] == "hour" and context["chart_bars"] == 24
    widths = bars(str(context["requests_chart"]))
    assert len(widths) == 24 and max(widths) <= MAX_BAR  # never one bar across the chart
    assert "00:00" in str(context["requests_chart"]) and "per hour" in context["chart_range"]


def test_an_open_selection_with_only_todays_traffic_is_charted_per_hour_not_as_one_bar(admin_client, ledger):
    # Deleted as ``purge_usage`` deletes old rows: their rollups stay, the chart must not count them.
    UsageRecord.objects.filter(pk__in=pks(ledger, "three_days", "ten_days")).delete()
    context = admin_client.get(LIST).context
    assert context["chart_step"] == "hour" and context["chart_bars"] >= 24
    assert max(bars(str(context["spend_chart"]))) <= MAX_BAR
    data = usage_chart.series(context["cl"].queryset, {})
    assert data.source == "rollups" and sum(b.requests for b in data.buckets) == 5


def test_a_purged_day_inside_the_range_is_not_charted_from_the_rollups(admin_client, ledger):
    UsageRecord.objects.filter(pk=ledger["rows"]["three_days"].pk).delete()
    context = admin_client.get(LIST, {"since": "7d"}).context
    data = usage_chart.series(context["cl"].queryset, {"since": "7d"})
    assert data.source == "rollups" and sum(b.requests for b in data.buckets) == 5 == context["cl"].queryset.count()


@pytest.mark.parametrize(
    ("params", "step", "count"),
    [
        ({"since": "1h"}, "5 minutes", (12, 13)),
        ({"since": "24h"}, "hour", (24, 25)),
        ({"since": "7d"}, "day", (7, 8)),
        ({}, "day", (11, 12)),
        ({"created_at__year": str(timezone.now().year)}, "month", (12,)),
    ],
)
def test_the_bucket_follows_the_selections_length(admin_client, ledger, params, step, count):
    context = admin_client.get(LIST, params).context
    assert context["chart_step"] == step and context["chart_bars"] in count


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"since": "24h"},
        {"outcome": "refused"},
        {"since": "7d", "outcome": "success"},
        {"priced__exact": "1", "since": "1h"},  # a filter the rollups do not key on: the ledger
        {"q": "search-api"},
    ],
)
def test_the_charts_add_up_to_the_filtered_list(admin_client, ledger, params):
    response = admin_client.get(LIST, params)
    queryset = response.context["cl"].queryset
    data = usage_chart.series(queryset, params)
    expected_source = "ledger" if {"priced__exact", "q"} & set(params) or params.get("since") == "1h" else "rollups"
    assert data.source == expected_source
    assert sum(b.requests for b in data.buckets) == queryset.count()
    assert (
        sum(b.refused for b in data.buckets)
        == queryset.filter(error_type__in=["budget_exceeded", "request_limited"]).count()
    )
    assert sum(b.cost for b in data.buckets) == sum(r.cost for r in queryset)


def test_the_rollups_and_the_ledger_draw_the_same_buckets(ledger):
    params = {"since": "7d", "virtual_key__id__exact": str(ledger["vk"].pk)}
    queryset = UsageRecord.objects.filter(virtual_key=ledger["vk"], created_at__gte=timezone.now() - timedelta(days=7))
    now = timezone.now()
    from_rollups = usage_chart.series(queryset, params, now)
    from_ledger = usage_chart.series(queryset, params | {"streamed__exact": "0"}, now)
    assert (from_rollups.source, from_ledger.source) == ("rollups", "ledger")
    assert [(b.start, b.requests, b.errors, b.refused, b.cost) for b in from_rollups.buckets] == [
        (b.start, b.requests, b.errors, b.refused, b.cost) for b in from_ledger.buckets
    ]


def test_selection_range_reads_every_time_filter():
    now = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
    assert usage_chart.selection_range({"since": "1h"}, now) == (now - timedelta(hours=1), None)
    day = {"created_at__year": "2026", "created_at__month": "2", "created_at__day": "28"}
    assert usage_chart.selection_range(day, now) == (
        datetime(2026, 2, 28, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
    )
    month = {"created_at__year": "2025", "created_at__month": "12"}
    assert usage_chart.selection_range(month, now) == (
        datetime(2025, 12, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    dates = {"created_at__gte": "2026-03-09 00:00:00+00:00", "created_at__lt": "2026-03-10"}
    assert usage_chart.selection_range(dates, now) == (
        datetime(2026, 3, 9, tzinfo=UTC),
        datetime(2026, 3, 10, tzinfo=UTC),
    )
    assert usage_chart.selection_range({"since": "2y", "created_at__year": "x"}, now) == (None, None)


# --- the dashboard ------------------------------------------------------------------------------


def test_dashboard_shows_errors_refusals_and_latency_per_model(admin_client, ledger):
    html = admin_client.get(DASHBOARD).content.decode()
    assert 'id="total-requests">7<' in html
    assert re.search(r'id="total-errors"><a href="[^"]+">1</a>', html)
    assert re.search(r'id="total-refused"><a href="[^"]+">2</a>', html)
    assert 'id="total-latency">250.0 ms<' in html
    table = html.split('id="by-model"')[1].split("</table>")[0]
    gpt4o = table.split(">gpt-4o</a>")[1].split("</tr>")[0]
    cells = re.findall(r'<td class="bf-num">([^<]*)</td>', gpt4o)
    assert cells == ["6", "1", "1", "33.33%", "400", "$0.0400", "250.0 ms"]


def hrefs(html: str, section: str) -> list[str]:
    return [
        h.replace("&amp;", "&")
        for h in re.findall(r'href="([^"]+)"', html.split(f'id="{section}"')[1].split("</table>")[0])
    ]


def test_dashboard_names_lead_to_their_filtered_views(admin_client, ledger):
    vk = ledger["vk"]
    html = admin_client.get(DASHBOARD).content.decode()
    links = hrefs(html, "top-virtual-keys")
    dashboard_link = next(h for h in links if h.startswith(DASHBOARD) and f"virtual_key={vk.pk}" in h)
    assert reverse("admin:governance_virtualkey_change", args=[vk.pk]) in links
    logs = next(h for h in links if h.startswith(LIST) and f"virtual_key__id__exact={vk.pk}" in h)
    assert admin_client.get(logs).status_code == 200

    narrowed = admin_client.get(dashboard_link).content.decode()
    assert 'id="total-requests">5<' in narrowed  # the key's five in the last 30 days
    assert "Showing only" in narrowed and ">VK search-api</a>" in narrowed

    model_links = hrefs(html, "by-model")
    mini = next(h for h in model_links if h.startswith(DASHBOARD) and "model=gpt-4o-mini" in h)
    assert parse_qs(urlsplit(mini).query)["provider"] == ["openai"]
    assert 'id="total-requests">1<' in admin_client.get(mini).content.decode()
    provider = next(h for h in hrefs(html, "by-provider") if h.startswith(DASHBOARD))
    assert parse_qs(urlsplit(provider).query)["provider"] == ["openai"]
    for section in ("top-teams", "top-customers"):
        assert any(h.startswith(DASHBOARD) and ("team=" in h or "customer=" in h) for h in hrefs(html, section))


def test_dashboard_counts_lead_to_the_matching_logs(admin_client, ledger):
    vk = ledger["vk"]
    html = admin_client.get(DASHBOARD, {"virtual_key": str(vk.pk)}).content.decode()
    refused = re.search(r'id="total-refused"><a href="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert "outcome=refused" in refused and f"virtual_key__id__exact={vk.pk}" in refused
    response = admin_client.get(refused)
    assert {r.pk for r in response.context["cl"].result_list} == pks(ledger, "budget")
    errors = re.search(r'id="total-errors"><a href="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert {r.pk for r in admin_client.get(errors).context["cl"].result_list} == pks(ledger, "error")


def test_dashboard_for_one_day_is_charted_per_hour(admin_client, ledger):
    now = timezone.now()
    response = admin_client.get(DASHBOARD, {"start": now.date().isoformat(), "end": now.date().isoformat()})
    assert response.context["step"] == "hour"
    widths = bars(str(response.context["requests_chart"]))
    assert len(widths) == 24 and max(widths) <= MAX_BAR
    # Five of the records are of the last five hours: fewer of them are today's just after midnight (UTC).
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    today = UsageRecord.objects.filter(created_at__gte=midnight).count()
    assert today == 5 or now - midnight < timedelta(hours=5)
    assert f'id="total-requests">{today}<' in response.content.decode()


def test_dashboard_shows_the_dates_in_force(admin_client, ledger):
    html = admin_client.get(DASHBOARD).content.decode()
    today = timezone.now().date()
    assert f'value="{today.isoformat()}"' in html
    assert f'value="{(today - timedelta(days=29)).isoformat()}"' in html
