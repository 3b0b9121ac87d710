"""The audit trail: every configuration write through the API, the import, the admin and commands
leaves an entry naming who, how and which fields, never a secret value; failed writes leave none."""

from __future__ import annotations

import json
import re
import sys
from base64 import b64encode
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import call_command
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from governance import audit
from governance.config_import import import_config
from governance.models import (
    AuditEntry,
    Budget,
    Provider,
    ProviderConfig,
    ProviderKey,
    Team,
    UsageRecord,
    Via,
    VirtualKey,
)
from governance.services import (
    provider_create,
    provider_key_create,
    team_create,
    virtual_key_create,
)
from tests.governance.test_admin_helpers import inline_rows, vk_body
from tests.governance.test_config_import import CONFIG, VK_VALUE

pytestmark = pytest.mark.django_db

VK_URL = "/api/governance/virtual-keys"
PROVIDER = {"provider": "openai", "network_config": {"base_url": "http://127.0.0.1:9000"}}
KEY_VALUE = "sk-provider-secret-value-9876"
LIST_URL = reverse("admin:governance_auditentry_changelist")


def entries(**filters) -> list[tuple[str, str, str, str, list[str]]]:
    """(action, object type, object name, via, changed fields), oldest first."""
    rows = AuditEntry.objects.filter(**filters).select_related("content_type").order_by("id")
    return [(e.action, e.content_type.model, e.object_repr, e.via, e.changed_fields) for e in rows]


def everything_recorded() -> str:
    return json.dumps(list(AuditEntry.objects.values()), default=str)


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


# --- the API ----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _start_empty(alice_token):
    """The fixtures' own writes (alice's API token) are not what a test looks at."""
    AuditEntry.objects.all().delete()


def test_api_create_update_rotate_delete_of_a_virtual_key_are_recorded_with_user_and_token(alice_api):
    created = alice_api.post(
        VK_URL, {"name": "k1", "budgets": [{"max_limit": 10, "reset_duration": "1d"}]}, format="json"
    )
    assert created.status_code == 200, created.content
    vk_id = created.json()["virtual_key"]["id"]
    value = created.json()["virtual_key"]["value"]
    assert entries() == [
        ("created", "virtualkey", "k1", "api", []),
        ("created", "budget", "$10.00 / 1d on virtual key k1", "api", []),
    ]
    assert set(AuditEntry.objects.values_list("user", "api_token")) == {("alice", "tests")}
    assert AuditEntry.objects.filter(content_type__model="virtualkey").get().object_id == vk_id

    AuditEntry.objects.all().delete()
    updated = alice_api.put(f"{VK_URL}/{vk_id}", {"name": "k2", "description": "for search"}, format="json")
    assert updated.status_code == 200, updated.content
    assert entries() == [("changed", "virtualkey", "k2", "api", ["name", "description"])]

    AuditEntry.objects.all().delete()
    again = alice_api.put(f"{VK_URL}/{vk_id}", {"name": "k2", "description": "for search"}, format="json")
    assert again.status_code == 200
    assert entries() == []  # a save that changes nothing records nothing

    rotated = alice_api.post(f"{VK_URL}/{vk_id}/rotate")
    assert rotated.status_code == 200
    assert entries() == [("changed", "virtualkey", "k2", "api", ["value"])]
    new_value = rotated.json()["virtual_key"]["value"]
    vk = VirtualKey.objects.get()
    for secret in (value, new_value, vk.value_digest):
        assert secret not in everything_recorded()

    AuditEntry.objects.all().delete()
    assert alice_api.delete(f"{VK_URL}/{vk_id}").status_code == 200
    assert sorted(entries()) == [
        ("deleted", "budget", "$10.00 / 1d on virtual key k2", "api", []),
        ("deleted", "virtualkey", "k2", "api", []),
    ]


def test_api_provider_key_writes_record_that_the_value_changed_but_never_the_value(alice_api):
    assert alice_api.post("/api/providers", PROVIDER, format="json").status_code == 200
    body = {"name": "k1", "value": KEY_VALUE, "models": ["*"]}
    created = alice_api.post("/api/providers/openai/keys", body, format="json")
    assert created.status_code == 200, created.content
    key_id = created.json()["key"]["id"]
    assert entries() == [
        ("created", "provider", "openai", "api", []),
        ("created", "providerkey", "openai/k1", "api", []),
    ]

    AuditEntry.objects.all().delete()
    changed = alice_api.put(
        f"/api/providers/openai/keys/{key_id}", {"value": "sk-rotated-secret-5555", "weight": 2.0}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert entries() == [("changed", "providerkey", "openai/k1", "api", ["value", "weight"])]
    stored = ProviderKey.objects.get()
    recorded = everything_recorded()
    for secret in (KEY_VALUE, "sk-rotated-secret-5555", stored.value_encrypted, "5555"):
        assert secret not in recorded

    AuditEntry.objects.all().delete()
    assert alice_api.delete("/api/providers/openai").status_code == 200
    assert sorted(entries()) == [
        ("deleted", "provider", "openai", "api", []),
        ("deleted", "providerkey", "openai/k1", "api", []),
    ]


def test_a_virtual_keys_provider_configs_and_their_keys_are_recorded(alice_api):
    provider = provider_create(name="openai", base_url="http://127.0.0.1:9/v1")
    key = provider_key_create(provider=provider, name="k1", value=KEY_VALUE)
    AuditEntry.objects.all().delete()
    created = alice_api.post(
        VK_URL, {"name": "k1", "provider_configs": [{"provider": "openai", "key_ids": [str(key.pk)]}]}, format="json"
    )
    assert created.status_code == 200, created.content
    assert entries() == [
        ("created", "virtualkey", "k1", "api", []),
        ("created", "providerconfig", "openai on virtual key k1", "api", []),
        ("changed", "providerconfig", "openai on virtual key k1", "api", ["keys"]),
    ]


def test_mcp_configs_given_to_a_key_are_recorded(alice_api, settings):
    from governance.models import McpClient

    McpClient.objects.create(name="github", per_user_oauth=True)
    AuditEntry.objects.all().delete()
    body = {"name": "k1", "mcp_configs": [{"mcp_client_name": "github", "tools_to_execute": ["search"]}]}
    assert alice_api.post(VK_URL, body, format="json").status_code == 200
    assert ("created", "virtualkeymcpconfig", "k1 → github", "api", []) in entries()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (VK_URL, {"name": "both", "team_id": "00000000-0000-4000-8000-000000000001", "customer_id": "x"}),
        # Fails after the key and its budget were saved: the whole write is rolled back.
        (VK_URL, {"name": "x", "budgets": [{"max_limit": 1, "reset_duration": "1d"}], "provider_configs": [{}]}),
        ("/api/providers/openai/keys", {"name": "k1", "value": ""}),
        ("/api/providers", {"provider": "bad name!"}),
    ],
)
def test_a_failed_api_write_leaves_no_entry(alice_api, path, body):
    provider_create(name="openai", base_url="http://127.0.0.1:9/v1")
    AuditEntry.objects.all().delete()
    response = alice_api.post(path, body, format="json")
    assert response.status_code == 400, response.content
    assert not AuditEntry.objects.exists()
    assert not VirtualKey.objects.exists() and not Budget.objects.exists()


def test_session_and_basic_auth_writes_name_the_user_without_a_token(client, alice, admin_client):
    assert admin_client.get("/admin/").status_code == 200
    csrf = admin_client.cookies["csrftoken"].value
    response = admin_client.post(
        "/api/governance/teams", json.dumps({"name": "by-session"}), "application/json", HTTP_X_CSRFTOKEN=csrf
    )
    assert response.status_code == 200, response.content
    basic = APIClient()
    basic.credentials(HTTP_AUTHORIZATION="Basic " + b64encode(b"alice:alice-password-123").decode())
    assert basic.post("/api/governance/teams", {"name": "by-basic"}, format="json").status_code == 200
    assert list(AuditEntry.objects.order_by("id").values_list("object_repr", "user", "api_token", "via")) == [
        ("by-session", "alice", "", "api"),
        ("by-basic", "alice", "", "api"),
    ]


# --- the config import and commands ---------------------------------------------------------------


def test_the_import_command_is_recorded_as_an_import_by_that_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_API_KEY", "sk-openai-secret-abcd")
    monkeypatch.setenv("TEST_ANTHROPIC_API_KEY", "sk-ant-secret-efgh")
    monkeypatch.setenv("TEST_VK_PLATFORM", VK_VALUE)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIG))
    call_command("import_bifrost_config", str(path), stdout=StringIO())

    assert set(AuditEntry.objects.values_list("user", "via", "api_token")) == {
        ("manage.py import_bifrost_config", "import", "")
    }
    recorded = {(action, kind, name) for action, kind, name, _, _ in entries()}
    assert ("created", "virtualkey", "platform-key") in recorded
    assert ("created", "providerkey", "openai/openai-primary") in recorded
    assert ("created", "team", "ML Team") in recorded
    assert ("created", "budget", "$10.50 / 1d on virtual key platform-key") in recorded
    for secret in ("sk-openai-secret-abcd", "sk-ant-secret-efgh", VK_VALUE, "sk-backup-000000000000wxyz"):
        assert secret not in everything_recorded()

    # A re-import with one change records that change, still as the import.
    AuditEntry.objects.all().delete()
    changed = json.loads(json.dumps(CONFIG))
    changed["governance"]["teams"][0]["name"] = "ML Team 2"
    path.write_text(json.dumps(changed))
    call_command("import_bifrost_config", str(path), stdout=StringIO())
    assert ("changed", "team", "ML Team 2", "import", ["name"]) in entries()
    assert not [e for e in entries() if e[1] in ("provider", "providerkey", "customer")]


def test_an_import_without_a_known_runner_is_recorded_as_import(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])
    import_config({"governance": {"customers": [{"id": "c1", "name": "Acme"}]}})
    assert entries() == [("created", "customer", "Acme", "import", [])]
    assert AuditEntry.objects.get().user == "import"


def test_a_management_command_is_named_and_no_actor_is_system(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/srv/bifrost/manage.py", "shell"])
    team_create(name="from-shell")
    monkeypatch.setattr(sys, "argv", ["gunicorn"])
    team_create(name="from-nowhere")
    assert list(AuditEntry.objects.order_by("id").values_list("object_repr", "user", "via")) == [
        ("from-shell", "manage.py shell", "command"),
        ("from-nowhere", "system", "system"),
    ]


def test_acting_as_names_the_channel_and_restores_the_previous_actor(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])
    with audit.acting_as(via=Via.COMMAND, user="manage.py seed_prices") as actor:
        assert audit.current_actor() == actor
        with audit.acting_as(via=Via.IMPORT):
            assert audit.current_actor() == audit.Actor(user="manage.py seed_prices", via=Via.IMPORT)
    assert audit.current_actor() is audit.SYSTEM


# --- transactions and what is not audited ------------------------------------------------------------


def test_a_rolled_back_write_leaves_no_entry():
    with pytest.raises(RuntimeError), transaction.atomic():
        team_create(name="gone")
        assert AuditEntry.objects.count() == 1  # written in the same transaction
        raise RuntimeError("abort")
    assert not Team.objects.exists() and not AuditEntry.objects.exists()


def test_usage_and_counters_are_not_audited():
    vk, _ = virtual_key_create(name="k", budgets=[{"max_limit": 5, "reset_duration": "1d"}])
    AuditEntry.objects.all().delete()
    UsageRecord.objects.create(
        created_at=timezone.now(), virtual_key=vk, provider="openai", model="gpt-4o", status_code=200, cost=Decimal("1")
    )
    Budget.objects.filter(virtual_key=vk).update(current_usage=Decimal("1"))
    assert not AuditEntry.objects.exists()


# --- the admin ----------------------------------------------------------------------------------------


def test_an_admin_edit_is_recorded_with_the_admin_user_and_django_history_still_works(admin_client):
    vk, _ = virtual_key_create(name="k", budgets=[{"max_limit": Decimal("10"), "reset_duration": "1d"}])
    budget = vk.budgets.get()
    AuditEntry.objects.all().delete()
    body = vk_body(name="k-renamed", description="edited in the admin")
    body |= inline_rows(
        "budgets",
        [
            {
                "id": str(budget.pk),
                "virtual_key": str(vk.pk),
                "max_limit": "25",
                "reset_duration": "1d",
                "alert_thresholds": "50, 80, 100",
            }
        ],
        initial=1,
    )
    response = admin_client.post(reverse("admin:governance_virtualkey_change", args=[vk.pk]), body)
    assert response.status_code == 302, response.content[:2000]

    assert entries() == [
        ("changed", "virtualkey", "k-renamed", "admin", ["name", "description"]),
        ("changed", "budget", "$25.00 / 1d on virtual key k-renamed", "admin", ["max_limit"]),
    ]
    assert set(AuditEntry.objects.values_list("user", "api_token")) == {("alice", "")}
    history = LogEntry.objects.get(object_id=str(vk.pk))
    assert history.user.username == "alice" and history.is_change()


def test_an_admin_delete_is_recorded(admin_client):
    team = team_create(name="Search")
    AuditEntry.objects.all().delete()
    response = admin_client.post(reverse("admin:governance_team_delete", args=[team.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert entries() == [("deleted", "team", "Search", "admin", [])]


def test_the_audit_list_is_newest_first_with_links_to_objects_that_still_exist(admin_client, alice_api):
    team = team_create(name="Kept team")
    gone = team_create(name="Gone team")
    gone.delete()
    assert alice_api.post("/api/providers", PROVIDER, format="json").status_code == 200
    key = alice_api.post("/api/providers/openai/keys", {"name": "k1", "value": KEY_VALUE}, format="json").json()["key"]
    rotated = alice_api.put(f"/api/providers/openai/keys/{key['id']}", {"value": "sk-other-1"}, format="json")
    assert rotated.status_code == 200

    page = admin_client.get(LIST_URL)
    assert page.status_code == 200
    html = page.content.decode()
    team_url = reverse("admin:governance_team_change", args=[team.pk])
    provider_url = reverse("admin:governance_provider_change", args=[Provider.objects.get().pk])
    assert f'<div class="audit-sub">team</div><a href="{team_url}">Kept team</a>' in html
    assert f'<div class="audit-sub">provider</div><a href="{provider_url}">openai</a>' in html
    assert '<div class="audit-sub">team</div>Gone team <span class="quiet">(no longer exists)</span>' in html
    assert 'alice<div class="audit-sub">API · token “tests”</div>' in html
    assert 'system<div class="audit-sub">system</div>' in html
    assert '<span class="audit-field">value <span class="gov-badge gov-badge-off">secret</span></span>' in html
    assert KEY_VALUE not in html and "sk-other-1" not in html
    newest = AuditEntry.objects.first()
    assert newest is not None and newest.object_repr == "openai/k1" and newest.action == "changed"
    assert html.index("openai/k1") < html.index("Kept team")  # newest first
    stamp = f"{newest.at:%Y-%m-%d %H:%M} UTC"
    assert re.search(rf'<th class="field-when"><a href="[^"]+">{stamp}</a></th>', html)

    by_api = admin_client.get(LIST_URL, {"via__exact": "api"}).content.decode()
    assert "openai/k1" in by_api and "Kept team" not in by_api
    searched = admin_client.get(LIST_URL, {"q": "kept"}).content.decode()
    assert "Kept team" in searched and "openai/k1" not in searched
    deleted = admin_client.get(LIST_URL, {"action__exact": "deleted"}).content.decode()
    assert "Gone team" in deleted and "Kept team" not in deleted
    by_type = admin_client.get(LIST_URL, {"type": str(newest.content_type_id)}).content.decode()
    assert "openai/k1" in by_type and "Kept team" not in by_type
    assert ">provider key</a>" in by_type  # the filter names types as people do
    assert admin_client.get(LIST_URL, {"type": "x"}).status_code == 200
    by_user = admin_client.get(LIST_URL, {"user": "system"}).content.decode()
    assert "Kept team" in by_user and "openai/k1" not in by_user
    assert admin_client.get(LIST_URL, {"at__year": str(newest.at.year)}).status_code == 200


def test_the_audit_trail_is_read_only_in_the_admin(admin_client):
    team_create(name="Search")
    entry = AuditEntry.objects.get()
    assert admin_client.get(reverse("admin:governance_auditentry_add")).status_code == 403
    detail = admin_client.get(reverse("admin:governance_auditentry_change", args=[entry.pk]))
    assert detail.status_code == 200 and "Search" in detail.content.decode()
    assert 'name="_save"' not in detail.content.decode()
    assert (
        admin_client.post(reverse("admin:governance_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert AuditEntry.objects.count() == 1


def test_provider_config_entries_name_their_key(alice_api):
    provider = provider_create(name="openai", base_url="http://127.0.0.1:9/v1")
    vk, _ = virtual_key_create(name="k", provider_configs=[{"provider": "openai", "key_ids": ["*"]}])
    config = ProviderConfig.objects.get()
    assert config.provider == provider
    AuditEntry.objects.all().delete()
    vk.delete()
    assert ("deleted", "providerconfig", "openai on virtual key k", "system", []) in entries()
