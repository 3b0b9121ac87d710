from __future__ import annotations

import pytest

from governance.models import Budget, Customer, Team, VirtualKey
from governance.services import customer_create, team_create, virtual_key_create

pytestmark = pytest.mark.django_db


class CrudContract:
    """The behaviour every named governance collection shares (Bifrost envelopes and messages)."""

    url: str
    wrapper: str
    plural: str
    label: str
    model: type

    def test_create_get_update_delete(self, alice_api):
        created = alice_api.post(self.url, {"name": "Alpha"}, format="json")
        assert created.status_code == 200
        assert created.json()["message"] == f"{self.label} created successfully"
        obj_id = created.json()[self.wrapper]["id"]
        fetched = alice_api.get(f"{self.url}/{obj_id}")
        assert fetched.status_code == 200 and fetched.json()[self.wrapper]["name"] == "Alpha"
        updated = alice_api.put(f"{self.url}/{obj_id}", {"name": "Beta"}, format="json")
        assert updated.json() | {self.wrapper: None} == {
            "message": f"{self.label} updated successfully",
            self.wrapper: None,
        }
        assert self.model.objects.get(pk=obj_id).name == "Beta"
        deleted = alice_api.delete(f"{self.url}/{obj_id}")
        assert deleted.json() == {"message": f"{self.label} deleted successfully"}
        assert not self.model.objects.filter(pk=obj_id).exists()

    def test_unknown_id_is_404_with_bifrost_message(self, alice_api):
        for method in ("get", "put", "delete"):
            response = getattr(alice_api, method)(f"{self.url}/6f1c2a57-0000-4000-8000-000000000000", {}, format="json")
            assert response.status_code == 404
            assert response.json()["error"]["message"] == f"{self.label} not found"

    def test_name_is_required(self, alice_api):
        response = alice_api.post(self.url, {"name": ""}, format="json")
        assert response.status_code == 400
        assert response.json()["error"]["message"].startswith("name: ")
        assert not self.model.objects.exists()

    def test_list_is_paginated_and_searchable(self, alice_api):
        for index in range(3):
            alice_api.post(self.url, {"name": f"Group {index}"}, format="json")
        body = alice_api.get(self.url, {"limit": 2, "search": "group"}).json()
        assert (len(body[self.plural]), body["count"], body["total_count"], body["limit"], body["offset"]) == (
            2,
            2,
            3,
            2,
            0,
        )

    def test_budgets_are_created_and_reconciled(self, alice_api):
        created = alice_api.post(
            self.url,
            {"name": "A", "budgets": [{"max_limit": 50, "reset_duration": "1M", "calendar_aligned": True}]},
            format="json",
        ).json()[self.wrapper]
        assert created["budgets"][0]["calendar_aligned"] is True
        alice_api.put(
            f"{self.url}/{created['id']}", {"budgets": [{"max_limit": 5, "reset_duration": "1d"}]}, format="json"
        )
        assert list(Budget.objects.values_list("reset_duration", flat=True)) == ["1d"]


class TestTeams(CrudContract):
    url, wrapper, plural, label, model = "/api/governance/teams", "team", "teams", "Team", Team

    def test_team_in_customer_and_customer_filter(self, alice_api):
        customer = customer_create(name="Acme")
        team = alice_api.post(self.url, {"name": "T", "customer_id": str(customer.pk)}, format="json").json()["team"]
        assert team["customer_id"] == str(customer.pk)
        alice_api.post(self.url, {"name": "Other"}, format="json")
        assert alice_api.get(self.url, {"customer_id": str(customer.pk)}).json()["total_count"] == 1

    def test_deleting_a_team_detaches_its_virtual_keys(self, alice_api):
        team = team_create(name="T")
        vk, _ = virtual_key_create(name="svc", team=team)
        alice_api.delete(f"{self.url}/{team.pk}")
        vk.refresh_from_db()
        assert vk.team_id is None

    def test_unknown_customer_is_400(self, alice_api):
        response = alice_api.post(
            self.url, {"name": "T", "customer_id": "6f1c2a57-0000-4000-8000-000000000000"}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["error"]["message"].startswith("customer_id: ")


class TestCustomers(CrudContract):
    url, wrapper, plural, label, model = "/api/governance/customers", "customer", "customers", "Customer", Customer

    def test_deleting_a_customer_detaches_teams_and_keys(self, alice_api):
        customer = customer_create(name="Acme")
        team = team_create(name="T", customer=customer)
        vk, _ = virtual_key_create(name="svc", customer=customer)
        alice_api.delete(f"{self.url}/{customer.pk}")
        team.refresh_from_db()
        vk.refresh_from_db()
        assert team.customer_id is None and vk.customer_id is None
        assert VirtualKey.objects.filter(pk=vk.pk).exists()

    def test_single_budget_field_is_rendered(self, alice_api):
        body = alice_api.post(
            self.url, {"name": "A", "budget": {"max_limit": 9, "reset_duration": "1w"}}, format="json"
        )
        assert body.json()["customer"]["budget"]["max_limit"] == 9.0
