"""``/api/governance/alert-webhooks`` and ``/api/governance/alerts``, and ``alert_thresholds`` on every
budget the API accepts: validation names the field and writes nothing, the secret is write-only."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from governance.models import AlertWebhook, Budget, BudgetAlert, Customer, ModelConfig, Team, VirtualKey
from governance.services import alert_webhook_create, provider_create, virtual_key_create

pytestmark = pytest.mark.django_db

URL = "/api/governance/alert-webhooks"
SECRET = "whsec-0123456789abcdef-never-shown"
BODY = {"name": "ops", "url": "https://hooks.example.com/services/T000/B000/XXXX", "secret": SECRET}


def error(response, status: int) -> str:
    assert response.status_code == status, response.content
    return response.json()["error"]["message"]


def test_create_answers_the_webhook_without_its_secret_and_stores_it_encrypted(alice_api):
    response = alice_api.post(URL, BODY, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["message"] == "Alert webhook created successfully"
    shown = response.json()["alert_webhook"]
    assert shown["name"] == "ops" and shown["url"] == BODY["url"] and shown["enabled"] is True
    assert shown["secret_set"] is True and "secret" not in shown
    assert SECRET not in response.content.decode()
    row = AlertWebhook.objects.get(pk=shown["id"])
    assert row.secret == SECRET and SECRET not in row.secret_encrypted
    for page in (URL, f"{URL}/{row.pk}"):
        assert SECRET not in alice_api.get(page).content.decode()


def test_update_patches_and_keeps_the_secret_unless_given(alice_api):
    made = alice_api.post(URL, BODY, format="json").json()["alert_webhook"]

    response = alice_api.put(f"{URL}/{made['id']}", {"enabled": False, "secret": None}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["alert_webhook"]["enabled"] is False
    assert AlertWebhook.objects.get().secret == SECRET

    new_secret = "another-secret-of-enough-length"
    response = alice_api.put(f"{URL}/{made['id']}", {"secret": new_secret, "name": "ops-2"}, format="json")
    assert response.status_code == 200 and new_secret not in response.content.decode()
    row = AlertWebhook.objects.get()
    assert (row.name, row.secret, row.enabled) == ("ops-2", new_secret, False)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "must not be blank"),
        ("name", 7, "must be a string"),
        ("url", "ftp://files.example.com/x", "http:// or https://"),
        ("url", "http://", "must name a host"),
        ("url", "https://user:pw@hooks.example.com/x", "credentials"),
        ("url", "https://hooks.example.com/a b", "whitespace"),
        ("url", "http://hooks.example.com:99999/", "not a valid URL"),
        ("url", ["http://x"], "must be a string"),
        ("secret", "short", "at least 16 characters"),
        ("secret", 1234567890123456789, "must be a string"),
        ("enabled", "yes", "true or false"),
    ],
)
def test_bad_fields_are_400_naming_the_field_and_write_nothing(alice_api, field, value, message):
    response = alice_api.post(URL, {**BODY, field: value}, format="json")

    text = error(response, 400)
    assert text.startswith(f"{field}: ") and message in text
    assert not AlertWebhook.objects.exists()
    if field == "secret":
        assert str(value) not in response.content.decode()


def test_missing_required_fields_are_named(alice_api):
    text = error(alice_api.post(URL, {"enabled": True}, format="json"), 400)
    assert "name: This field is required." in text and "url: " in text and "secret: " in text


def test_a_bad_update_writes_nothing(alice_api):
    made = alice_api.post(URL, BODY, format="json").json()["alert_webhook"]
    before = list(AlertWebhook.objects.values())

    assert error(alice_api.put(f"{URL}/{made['id']}", {"url": "gopher://x"}, format="json"), 400).startswith("url: ")
    assert list(AlertWebhook.objects.values()) == before


def test_a_taken_name_is_409(alice_api):
    alice_api.post(URL, BODY, format="json")
    other = alice_api.post(URL, {**BODY, "name": "other"}, format="json").json()["alert_webhook"]

    assert error(alice_api.post(URL, BODY, format="json"), 409).startswith("name: ")
    assert error(alice_api.put(f"{URL}/{other['id']}", {"name": "ops"}, format="json"), 409).startswith("name: ")
    assert AlertWebhook.objects.count() == 2


def test_delete_and_unknown_ids(alice_api):
    made = alice_api.post(URL, BODY, format="json").json()["alert_webhook"]
    assert alice_api.delete(f"{URL}/{made['id']}").json() == {"message": "Alert webhook deleted successfully"}
    assert error(alice_api.get(f"{URL}/{made['id']}"), 404) == "Alert webhook not found"
    assert error(alice_api.get(f"{URL}/not-a-uuid"), 404) == "Alert webhook not found"


def test_view_only_staff_can_list_but_not_create(bob_api):
    assert bob_api.get(URL).status_code == 200
    assert bob_api.get("/api/governance/alerts").status_code == 200
    assert error(bob_api.post(URL, BODY, format="json"), 403)
    assert not AlertWebhook.objects.exists()


# --- alert thresholds on budgets -----------------------------------------------------------------


def test_thresholds_default_round_trip_and_are_kept_when_left_out(alice_api):
    vk = alice_api.post(
        "/api/governance/virtual-keys",
        {"name": "k", "budgets": [{"max_limit": 10, "reset_duration": "1d"}]},
        format="json",
    ).json()["virtual_key"]
    assert vk["budgets"][0]["alert_thresholds"] == [50, 80, 100]

    url = f"/api/governance/virtual-keys/{vk['id']}"
    budgets = [{"max_limit": 10, "reset_duration": "1d", "alert_thresholds": [90, 25]}]
    shown = alice_api.put(url, {"budgets": budgets}, format="json").json()["virtual_key"]
    assert shown["budgets"][0]["alert_thresholds"] == [25, 90]  # stored ascending

    shown = alice_api.put(url, {"budgets": [{"max_limit": 20, "reset_duration": "1d"}]}, format="json").json()
    assert shown["virtual_key"]["budgets"][0]["alert_thresholds"] == [25, 90]
    shown = alice_api.put(url, {"budgets": [{**budgets[0], "alert_thresholds": []}]}, format="json").json()
    assert shown["virtual_key"]["budgets"][0]["alert_thresholds"] == []
    assert Budget.objects.get().alert_thresholds == []
    listed = alice_api.get("/api/governance/budgets").json()["budgets"]
    assert listed[0]["alert_thresholds"] == []


@pytest.mark.parametrize(
    ("value", "named", "message"),
    [
        ([0], "budgets[0].alert_thresholds", "from 1 to 100"),
        ([50, 101], "budgets[0].alert_thresholds", "from 1 to 100"),
        ([80, 80], "budgets[0].alert_thresholds", "duplicate threshold 80"),
        (["50"], "budgets[0].alert_thresholds[0]", "valid integer"),
        ([50.5], "budgets[0].alert_thresholds[0]", "valid integer"),
        ([True], "budgets[0].alert_thresholds[0]", "valid integer"),
        ("50, 80", "budgets[0].alert_thresholds", "list"),
        (list(range(1, 13)), "budgets[0].alert_thresholds", "no more than 10"),
    ],
)
@pytest.mark.parametrize(
    ("owner_url", "owner_body", "model"),
    [
        ("/api/governance/virtual-keys", {"name": "k"}, VirtualKey),
        ("/api/governance/teams", {"name": "t"}, Team),
        ("/api/governance/customers", {"name": "c"}, Customer),
        ("/api/governance/model-configs", {"model_name": "gpt-4o"}, ModelConfig),
    ],
)
def test_bad_thresholds_are_400_naming_the_budget_field_and_write_nothing(
    alice_api, owner_url, owner_body, model, value, named, message
):
    body = {**owner_body, "budgets": [{"max_limit": 10, "reset_duration": "1d", "alert_thresholds": value}]}

    text = error(alice_api.post(owner_url, body, format="json"), 400)

    assert text.startswith(f"{named}: ") and message in text, text
    assert not model.objects.exists() and not Budget.objects.exists()


def test_thresholds_on_provider_governance_and_provider_configs(alice_api):
    provider_create(name="openai", base_url="http://127.0.0.1:9")
    budget = {"max_limit": 5, "reset_duration": "1M", "alert_thresholds": [75]}
    shown = alice_api.put("/api/governance/providers/openai", {"budgets": [budget]}, format="json").json()
    assert shown["provider"]["budgets"][0]["alert_thresholds"] == [75]
    bad = {"budgets": [{**budget, "alert_thresholds": [200]}]}
    assert error(alice_api.put("/api/governance/providers/openai", bad, format="json"), 400).startswith(
        "budgets[0].alert_thresholds: "
    )

    body = {"name": "k", "provider_configs": [{"provider": "openai", "budgets": [{**budget, "alert_thresholds": [0]}]}]}
    text = error(alice_api.post("/api/governance/virtual-keys", body, format="json"), 400)
    assert text.startswith("provider_configs[0].budgets[0].alert_thresholds: ")
    assert not VirtualKey.objects.exists()


# --- the alerts list -------------------------------------------------------------------------------


def test_alerts_list_shows_each_alert_with_its_deliveries(alice_api):
    vk, _ = virtual_key_create(name="svc", budgets=[{"max_limit": 10, "reset_duration": "1d"}])
    budget = Budget.objects.get()
    hook = alert_webhook_create(name="ops", url="http://127.0.0.1:9/hook", secret=SECRET)
    alert = BudgetAlert.objects.create(
        budget=budget, window_start=budget.last_reset, threshold=80, spend=8, limit=10, crossed_at=budget.last_reset
    )
    alert.deliveries.create(webhook=hook, next_attempt_at=budget.last_reset, created_at=budget.last_reset)

    body = alice_api.get("/api/governance/alerts").json()
    assert body["count"] == 1 and body["total_count"] == 1
    shown = body["alerts"][0]
    assert (shown["budget_id"], shown["threshold_percent"], shown["spend"], shown["limit"]) == (
        str(budget.pk),
        80,
        8.0,
        10.0,
    )
    assert shown["deliveries"][0]["webhook"] == "ops" and shown["deliveries"][0]["status"] == "pending"
    assert alice_api.get("/api/governance/alerts", {"budget_id": str(vk.pk)}).json()["alerts"] == []
    assert error(alice_api.get("/api/governance/alerts", {"budget_id": "nope"}), 400).startswith("budget_id: ")


def test_the_schema_documents_both_routes_and_no_secret_in_answers():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert {"/api/governance/alert-webhooks", "/api/governance/alert-webhooks/{id}", "/api/governance/alerts"} <= set(
        schema["paths"]
    )
    shown = schema["components"]["schemas"]["AlertWebhookOut"]["properties"]
    assert "secret" not in shown and "secret_set" in shown
    assert "alert_thresholds" in schema["components"]["schemas"]["BudgetOut"]["properties"]
    assert "alert_thresholds" in schema["components"]["schemas"]["BudgetInputRequest"]["properties"]
