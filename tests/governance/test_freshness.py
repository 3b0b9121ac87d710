"""The configuration generation: one bump per committed change, and what a request does with it."""

from __future__ import annotations

import pytest
from django.db import transaction

from governance.metering import freshness, snapshot
from governance.models import ConfigGeneration, Customer
from governance.services import customer_create

pytestmark = pytest.mark.django_db


def generation() -> int:
    return ConfigGeneration.objects.filter(pk=1).values_list("value", flat=True).first() or 0


def test_a_transaction_of_many_changes_moves_the_generation_once(django_capture_on_commit_callbacks):
    before = generation()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            for index in range(30):
                customer_create(name=f"customer-{index}")
    assert len(callbacks) == 1
    assert generation() == before + 1


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_moves_nothing_and_the_next_one_still_does():
    ConfigGeneration.objects.get_or_create(pk=1)
    before = generation()
    with transaction.atomic():
        customer_create(name="kept")
        try:
            with transaction.atomic():
                customer_create(name="dropped")
                raise RuntimeError("roll back the savepoint")
        except RuntimeError:
            pass
    assert generation() == before + 1
    try:
        with transaction.atomic():
            customer_create(name="never")
            raise RuntimeError("roll back the transaction")
    except RuntimeError:
        pass
    assert generation() == before + 1
    Customer.objects.get(name="kept").delete()
    assert generation() == before + 2


def test_embedded_mode_drops_the_caches_when_another_process_moved_the_shared_counter(settings):
    if freshness._source() != "local":
        pytest.skip("the shared counter file is the embedded mode's")
    freshness.begin_request()
    snapshot._providers = (0.0, {"stale": None})  # what this process cached
    freshness._bump_file()  # what another process's commit does
    freshness.begin_request()
    assert snapshot._providers is None
