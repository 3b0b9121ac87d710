"""Request slots (``bifrost_site.slots``): how many requests run at once, and how many threads keep
a database connection between requests."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from bifrost_site.slots import Slots
from governance.models import Customer

pytestmark = pytest.mark.django_db(transaction=True)


def _in_thread(slots: Slots, query: bool, keep_alive: threading.Event | None = None) -> bool:
    """Runs one request in a new thread; answers whether the thread still had its connection after."""
    kept: list[bool] = []

    def request() -> None:
        with slots:
            if query:
                Customer.objects.exists()
        kept.append(connection.connection is not None)
        if keep_alive is not None:
            keep_alive.wait(10)
        connection.close()

    thread = threading.Thread(target=request)
    thread.start()
    if keep_alive is None:
        thread.join(10)
    else:
        for _ in range(100):
            if kept:
                break
            time.sleep(0.01)
    return kept[0]


def test_at_most_size_threads_keep_a_connection_and_a_thread_that_ended_frees_its_place():
    slots = Slots(2)
    hold = threading.Event()
    try:
        assert _in_thread(slots, True, hold) and _in_thread(slots, True, hold)
        assert slots.keeping() == 2
        assert _in_thread(slots, True, hold) is False  # a third thread lets its connection go
        assert slots.keeping() == 2
        assert _in_thread(slots, False, hold) is False  # no query, nothing kept
    finally:
        hold.set()
    time.sleep(0.2)  # the threads have ended: their places are free again
    assert _in_thread(slots, True) is True


def test_requests_beyond_the_size_wait_for_a_slot():
    slots = Slots(1)
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with slots:
            inside.set()
            release.wait(10)
            order.append("first")

    def second() -> None:
        with slots:
            order.append("second")

    one = threading.Thread(target=first)
    one.start()
    assert inside.wait(10)
    two = threading.Thread(target=second)
    two.start()
    time.sleep(0.2)
    assert order == []  # the second waits while the first holds the only slot
    release.set()
    one.join(10)
    two.join(10)
    assert order == ["first", "second"]
