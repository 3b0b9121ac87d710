from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from governance.models import Budget, UsageRecord
from governance.services import customer_create, team_create, virtual_key_create

pytestmark = pytest.mark.django_db
URL = "/admin/usage-dashboard/"


@pytest.fixture
def ledger():
    customer = customer_create(name="Acme")
    team = team_create(name="Core", customer=customer)
    vk, _ = virtual_key_create(name="svc-a", team=team, budgets=[{"max_limit": 10, "reset_duration": "1d"}])
    other, _ = virtual_key_create(name="svc-b")
    Budget.objects.filter(virtual_key=vk).update(current_usage=Decimal("9.5"))
    now = timezone.now()

    def add(key, cost, tokens, days_ago=0, model="gpt-4o", priced=True):
        return UsageRecord.objects.create(
            created_at=now - timedelta(days=days_ago),
            virtual_key=key,
            team=key.team,
            customer=customer if key.team else None,
            provider="openai",
            model=model,
            status_code=200,
            prompt_tokens=tokens // 2,
            completion_tokens=tokens - tokens // 2,
            total_tokens=tokens,
            cost=Decimal(cost),
            priced=priced,
        )

    add(vk, "1.2500", 1000)
    add(vk, "0.7500", 500, days_ago=3)
    add(other, "0.1000", 100, days_ago=1)
    add(other, "0", 50, model="=cmd|evil", priced=False)
    add(vk, "5.0000", 9999, days_ago=45)  # outside the default 30-day window
    return vk, other


def test_dashboard_numbers_match_the_ledger(client, alice, ledger):
    client.force_login(alice)
    response = client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="total-spend">$2.10<' in html
    assert 'id="total-requests">4<' in html
    assert 'id="total-tokens">1,650<' in html
    assert "<svg" in html and "Spend per day" in html
    top = html.split('id="top-virtual-keys"')[1].split("</table>")[0]
    assert top.index("svc-a") < top.index("svc-b") and "$2.00" in top
    assert "Team Core" not in top and "$2.00" in html.split('id="top-teams"')[1].split("</table>")[0]
    assert "=cmd|evil" in html.split('id="unpriced"')[1]
    bars = html.split('id="budget-bars"')[1].split("</table>")[0]
    assert "VK svc-a" in bars and "bf-over" in bars and "$9.50 / $10.00" in bars


def test_filters_narrow_the_numbers(client, alice, ledger):
    vk, _ = ledger
    client.force_login(alice)
    html = client.get(URL, {"virtual_key": str(vk.pk)}).content.decode()
    assert 'id="total-spend">$2.00<' in html
    start = (timezone.now() - timedelta(days=60)).date().isoformat()
    html = client.get(URL, {"start": start}).content.decode()
    assert 'id="total-requests">5<' in html


@pytest.mark.parametrize(
    "query",
    [
        {"start": "yesterday"},
        {"start": "2026-02-01", "end": "2026-01-01"},
        {"virtual_key": "nope"},
        {"start": "2000-01-01", "end": "2026-01-01"},
    ],
)
def test_bad_filters_are_a_400_page_with_the_error(client, alice, query):
    client.force_login(alice)
    response = client.get(URL, query)
    assert response.status_code == 400
    assert "Please correct the filters below." in response.content.decode()


def test_csv_export_lists_the_filtered_records(client, alice, ledger):
    client.force_login(alice)
    response = client.get(URL + "usage.csv")
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 4
    assert sum(Decimal(row["cost"]) for row in rows) == Decimal("2.1")
    assert {row["model"] for row in rows} == {"gpt-4o", "'=cmd|evil"}


@pytest.mark.parametrize("model", ["\t=cmd|evil", "\r=1+1", "=1+1", "+1", "-1+2", "@SUM(A1)"])
def test_csv_export_neutralises_every_formula_start_including_tab_and_cr(client, alice, model):
    vk, _ = virtual_key_create(name="svc")
    UsageRecord.objects.create(
        created_at=timezone.now(),
        virtual_key=vk,
        provider="openai",
        model=model,
        status_code=200,
        total_tokens=5,
        cost=Decimal("0.5"),
    )
    client.force_login(alice)
    response = client.get(URL + "usage.csv")
    assert response.status_code == 200 and response["Content-Disposition"] == 'attachment; filename="usage.csv"'
    [row] = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode(), newline="")))
    assert row["model"] == "'" + model
    assert (row["cost"], row["total_tokens"], row["virtual_key"]) == ("0.5000000000", "5", "svc")


def test_csv_export_with_bad_filters_is_400(client, alice):
    client.force_login(alice)
    response = client.get(URL + "usage.csv", {"end": "nope"})
    assert response.status_code == 400 and b"end:" in response.content


def test_view_only_staff_can_see_it_and_anonymous_cannot(client, bob, django_user_model):
    assert client.get(URL).status_code == 302
    client.force_login(bob)
    assert client.get(URL).status_code == 200
    plain = django_user_model.objects.create_user("carol", password="carol-password-123", is_staff=True)
    client.force_login(plain)
    assert client.get(URL).status_code == 403


def test_admin_index_links_to_the_dashboard(client, alice):
    client.force_login(alice)
    assert URL in client.get("/admin/").content.decode()


@pytest.mark.parametrize("model", ["virtualkey", "team", "customer"])
def test_change_pages_show_own_spend_chart_and_each_budget_once(client, alice, ledger, model):
    vk, _ = ledger
    obj = {"virtualkey": vk, "team": vk.team, "customer": vk.team.customer}[model]
    if model != "virtualkey":
        Budget.objects.create(
            **{model: obj}, max_limit=Decimal("10"), reset_duration="1d", current_usage=Decimal("9.5")
        )
    client.force_login(alice)
    html = client.get(f"/admin/governance/{model}/{obj.pk}/change/").content.decode()
    panel = html.split('id="usage-panel"')[1]
    assert 'id="panel-spend">$2.00<' in panel and 'id="panel-requests">2<' in panel
    assert "<svg" in panel
    noun = {"virtualkey": "key", "team": "team", "customer": "customer"}[model]
    assert f"The {noun}'s budgets are above" in panel.replace("&#x27;", "'")
    # The budget is shown once, live, in its budget row (not again in the panel below it).
    assert html.count("$9.50 / $10.00") == 1 and "gov-bar-fill gov-over" in html
    assert html.index('id="usage-panel"') > html.index("$9.50 / $10.00")


@pytest.mark.parametrize(
    ("amount", "shown"),
    [("0", "$0.00"), ("12.346", "$12.35"), ("0.0123", "$0.0123"), ("0.0000148500", "$0.00001485")],
)
def test_small_spend_never_reads_as_zero(amount, shown):
    from governance.dashboard.charts import money

    assert money(Decimal(amount)) == shown
