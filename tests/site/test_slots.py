"""Request slots (``bifrost_site.slots``): how many requests run at once, and how many threads keep
a database connection between requests."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from bifrost_site.slots import Slots, lent
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


def test_a_request_waiting_on_its_upstream_lends_its_slot_and_takes_one_back_after():
    slots = Slots(1)
    lending, other_inside, other_go, done = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def waiting_on_upstream() -> None:
        with slots:
            with lent():
                lending.set()
                assert other_inside.wait(10)  # the other request runs in the lent slot
                order.append("upstream answered")
            order.append("first goes on")  # only once the slot is free again
        done.set()

    def other() -> None:
        with slots:
            other_inside.set()
            other_go.wait(10)
            order.append("other done")

    first = threading.Thread(target=waiting_on_upstream)
    first.start()
    assert lending.wait(10)
    second = threading.Thread(target=other)
    second.start()
    assert other_inside.wait(10)
    time.sleep(0.2)
    assert order == ["upstream answered"]  # waiting for its slot back while the other holds it
    other_go.set()
    first.join(10)
    second.join(10)
    assert order == ["upstream answered", "other done", "first goes on"] and done.is_set()


def test_a_thread_in_a_transaction_or_without_a_slot_lends_nothing():
    slots = Slots(1)
    inside, finished = threading.Event(), threading.Event()

    def in_transaction() -> None:
        with slots, transaction.atomic(), lent():
            inside.set()
            finished.wait(10)
        connection.close()

    holder = threading.Thread(target=in_transaction)
    holder.start()
    assert inside.wait(10)
    taken = threading.Event()

    def other() -> None:
        with slots:
            taken.set()

    waiter = threading.Thread(target=other)
    waiter.start()
    assert not taken.wait(0.3)  # the slot stayed with the transaction
    finished.set()
    holder.join(10)
    waiter.join(10)
    assert taken.is_set()

    with lent():  # no slot held: nothing to lend, nothing to take back
        pass
    with slots:  # and the slot is still there to take
        pass


def test_a_lending_thread_that_does_not_keep_a_connection_lets_it_go():
    slots = Slots(1)
    hold = threading.Event()
    try:
        assert _in_thread(slots, True, hold)  # this thread keeps the one connection allowed
        seen: list[bool] = []

        def request() -> None:
            with slots:
                Customer.objects.exists()
                with lent():
                    seen.append(connection.connection is None)
                Customer.objects.exists()  # reconnects once its slot is back
                seen.append(connection.connection is not None)
            connection.close()

        thread = threading.Thread(target=request)
        thread.start()
        thread.join(10)
        assert seen == [True, True]
    finally:
        hold.set()
