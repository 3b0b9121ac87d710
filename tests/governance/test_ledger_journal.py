"""The ledger's local journal (``governance.metering.journal``) and the memory bound of ``governance.metering.writer``.

Rules under test:

- an entry (usage row or settlement) comes back from its journal line field for field, whatever
  the counter backend's marks look like;
- threads appending at once each get their entries written once, in one segment a live writer
  holds locked (nobody replays it), that any process may claim once it is closed;
- a replay writes the UsageRecords and settles the counters exactly once: replaying again, a
  replay that died after settling a batch, an entry journaled while its write was in flight
  (``maybe``) and a settle whose commit was not acknowledged all end with counters = ledger;
- past ``BIFROST_LEDGER_MEMORY_ROWS`` entries held in memory, ``record`` and ``settle`` journal;
- an unreadable line is set aside in ``failed/`` for an operator, never dropped.
"""

from __future__ import annotations

import io
import json
import queue
import threading
import uuid
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.utils import timezone

from governance.metering import enforcement, journal, ledger, writer
from governance.metering.enforcement import LedgerEntry, Settlement
from governance.metering.live import budget_usage, rate_limit_usage
from governance.models import Budget, RateLimit, UsageRecord
from tests.governance.conftest_counters import T0, admit, anchor_windows, ledger_total, path_specs

pytestmark = pytest.mark.django_db(transaction=True)

LIMITS = {
    "budgets": [{"max_limit": "100", "reset_duration": "1d"}],
    "rate_limit": {
        "request_max_limit": 1000,
        "request_reset_duration": "1d",
        "token_max_limit": 1_000_000,
        "token_reset_duration": "1d",
    },
}


def settlement(vk, specs, *, cost: str = "0.003", tokens: int = 30) -> Settlement:
    admission = admit(specs, cost="0.01", tokens=100)
    entry = LedgerEntry(
        provider="openai",
        model="gpt-4o-mini",
        status_code=200,
        virtual_key_id=vk.pk,
        prompt_tokens=tokens - 10,
        completion_tokens=10,
        created_at=timezone.now(),
    )
    return Settlement(admission, Decimal(cost), tokens, True, entry)


def usage_row(**fields) -> dict:
    return {
        "request_id": uuid.uuid4(),
        "provider": "openai",
        "model": "gpt-4o-mini",
        "status_code": 200,
        "virtual_key_id": None,
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "cost": Decimal("0.0000012345"),
        "created_at": timezone.now(),
        **fields,
    }


def journal_files(path) -> list:
    return sorted(p for p in path.glob(f"*{journal.SUFFIX}"))


def replay(path) -> journal.Replayed:
    return journal.replay_pending(path, write_rows=writer.write_rows)


def assert_counters_equal_the_ledger(vk, count: int, cost: Decimal, tokens: int) -> None:
    budget, rate_limit = Budget.objects.get(virtual_key=vk), RateLimit.objects.get(virtual_key=vk)
    assert UsageRecord.objects.filter(virtual_key=vk).count() == count
    assert budget.current_usage == ledger_total(virtual_key=vk) == cost
    assert (rate_limit.request_current_usage, rate_limit.token_current_usage) == (count, tokens)
    # The live view: the hot copy (Redis, local table) where there is one, else the rows.
    assert budget_usage([budget.pk], now=T0)[str(budget.pk)] == cost
    live = rate_limit_usage([rate_limit.pk], now=T0)[str(rate_limit.pk)]
    assert (live.requests.usage, live.tokens.usage) == (count, tokens)


# --- encoding and writing ----------------------------------------------------------------------------


def test_a_settlement_and_a_usage_row_come_back_from_the_journal_field_for_field(counter_mode, make_vk):
    vk = make_vk(**LIMITS)
    anchor_windows()
    item = settlement(vk, path_specs(vk))
    row = usage_row(virtual_key_id=vk.pk)

    line = json.loads(b'{"n":1,' + journal.encode_entry("settle", item, maybe=True)[1:])
    assert line["maybe"] is True
    assert journal.decode_entry(line) == ("settle", item)
    assert journal.decode_entry(json.loads(journal.encode_entry("row", row))) == ("row", row)
    # Marks differ per backend: (generation, anchor) pairs for the hot ones, datetimes in the rows.
    assert item.admission.backend == {"database": "database", "local": "local", "redis": "redis"}[counter_mode]


def test_a_journal_line_holds_no_secret(make_vk, tmp_path):
    vk = make_vk(**LIMITS)
    anchor_windows()
    log = journal.Journal(tmp_path)
    log.append("settle", [settlement(vk, path_specs(vk))])
    log.close()
    text = journal_files(tmp_path)[0].read_text()
    assert "sk-" not in text and vk.value_digest not in text


def test_threads_appending_at_once_each_get_their_entries_written_once(tmp_path):
    log = journal.Journal(tmp_path)
    rows = [[usage_row(status_code=200 + t) for _ in range(40)] for t in range(12)]
    threads = [
        threading.Thread(target=lambda batch=batch: [log.append("row", [row]) for row in batch]) for batch in rows
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    log.close()

    [path] = journal_files(tmp_path)
    header, *entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert header["journal"] == journal.VERSION
    assert [e["n"] for e in entries] == list(range(1, 481))
    written = sorted(str(journal.decode_entry(e)[1]["request_id"]) for e in entries)
    assert written == sorted(str(row["request_id"]) for batch in rows for row in batch)
    assert log.written == 480


def test_a_segment_its_writer_holds_cannot_be_claimed_until_it_is_closed(tmp_path):
    log = journal.Journal(tmp_path)
    log.append("row", [usage_row()])
    [path] = journal_files(tmp_path)

    assert journal._claim(path) is None  # the writer's lock (another open file, same process)
    log.seal_if_idle(idle_seconds=0)
    fd = journal._claim(path)
    assert fd is not None
    assert journal._claim(path) is None  # one replayer at a time
    journal.os.close(fd)


# --- replay: exactly once ------------------------------------------------------------------------------


def test_a_replay_writes_every_record_and_settles_every_counter_once(counter_mode, make_vk, tmp_path):
    vk = make_vk(**LIMITS)
    anchor_windows()
    specs = path_specs(vk)
    log = journal.Journal(tmp_path)
    log.append("settle", [settlement(vk, specs) for _ in range(7)])
    log.append("row", [usage_row() for _ in range(5)])
    log.close()

    first = replay(tmp_path)
    again = replay(tmp_path)

    assert (first.files, first.settlements, first.rows, first.failed) == (1, 7, 5, 0)
    assert again == journal.Replayed()
    assert journal_files(tmp_path) == []
    assert UsageRecord.objects.filter(virtual_key__isnull=True).count() == 5
    assert_counters_equal_the_ledger(vk, 7, Decimal("0.021"), 7 * 30)


class Died(BaseException):
    """The replaying process died (nothing catches it, as nothing runs after a SIGKILL)."""


def test_a_replay_that_died_after_settling_a_batch_does_not_charge_it_twice(
    counter_mode, make_vk, tmp_path, monkeypatch
):
    vk = make_vk(**LIMITS)
    anchor_windows()
    specs = path_specs(vk)
    monkeypatch.setattr(journal, "REPLAY_BATCH", 4)
    log = journal.Journal(tmp_path)
    log.append("settle", [settlement(vk, specs) for _ in range(10)])
    log.close()
    mark = journal._File.mark

    def die_before_the_second_batch_is_marked_replayed(self, marker):
        if marker.get("replayed") == 8:
            raise Died
        mark(self, marker)

    monkeypatch.setattr(journal._File, "mark", die_before_the_second_batch_is_marked_replayed)
    with pytest.raises(Died):
        replay(tmp_path)
    monkeypatch.setattr(journal._File, "mark", mark)
    # Batches 1 and 2 are in the ledger and their hot copies settled; batch 2 was not marked.
    assert UsageRecord.objects.count() == 8

    assert replay(tmp_path).settlements == 6  # the unsure batch again, then the last one
    assert_counters_equal_the_ledger(vk, 10, Decimal("0.030"), 300)


def test_an_entry_journaled_while_its_write_was_in_flight_is_charged_once_if_that_write_committed(
    counter_mode, make_vk, tmp_path
):
    vk = make_vk(**LIMITS)
    anchor_windows()
    specs = path_specs(vk)
    done, lost = settlement(vk, specs), settlement(vk, specs)
    log = journal.Journal(tmp_path)
    log.append("settle", [done, lost], maybe=True)  # as ``flush`` does at exit
    log.close()
    enforcement.settle_many([done], now=T0)  # the write in flight then went through

    assert replay(tmp_path).settlements == 2
    assert_counters_equal_the_ledger(vk, 2, Decimal("0.006"), 60)


def test_a_settle_whose_commit_was_not_acknowledged_is_charged_once_from_the_journal(
    counter_mode, make_vk, tmp_path, monkeypatch
):
    vk = make_vk(**LIMITS)
    anchor_windows()
    item = settlement(vk, path_specs(vk))
    record_many = ledger.record_many

    def commit_then_lose_the_acknowledgement(charges, *, now):
        record_many(charges, now=now)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(ledger, "record_many", commit_then_lose_the_acknowledgement)
    with pytest.raises(OperationalError):
        enforcement.settle_many([item], now=T0)
    monkeypatch.undo()
    log = journal.Journal(tmp_path)
    log.append("settle", [item])
    log.close()

    assert replay(tmp_path).settlements == 1
    assert_counters_equal_the_ledger(vk, 1, Decimal("0.003"), 30)


def test_a_replay_the_database_interrupts_resumes_where_it_stopped(make_vk, tmp_path, monkeypatch):
    vk = make_vk(**LIMITS)
    anchor_windows()
    specs = path_specs(vk)
    monkeypatch.setattr(journal, "REPLAY_BATCH", 3)
    log = journal.Journal(tmp_path)
    log.append("settle", [settlement(vk, specs) for _ in range(7)])
    log.close()
    settle_many, calls = enforcement.settle_many, []

    def database_gone_at_the_second_batch(items, **kwargs):
        calls.append(len(items))
        if len(calls) == 2:
            raise OperationalError("connection refused")
        return settle_many(items, **kwargs)

    monkeypatch.setattr(enforcement, "settle_many", database_gone_at_the_second_batch)
    with pytest.raises(OperationalError):
        replay(tmp_path)
    assert UsageRecord.objects.count() == 3
    assert replay(tmp_path).settlements == 4
    assert calls == [3, 3, 3, 1]
    assert_counters_equal_the_ledger(vk, 7, Decimal("0.021"), 210)


def test_an_unreadable_line_is_kept_for_an_operator_and_the_rest_is_replayed(tmp_path):
    log = journal.Journal(tmp_path)
    log.append("row", [usage_row(), usage_row()])
    log.close()
    [path] = journal_files(tmp_path)
    with open(path, "ab") as handle:
        handle.write(b'{"n":3,"row":{"$map":{"provi')  # torn by a crash mid-write

    result = replay(tmp_path)

    assert (result.rows, result.failed) == (2, 1)
    assert UsageRecord.objects.count() == 2
    assert (tmp_path / "failed" / path.name).read_bytes() == b'{"n":3,"row":{"$map":{"provi\n'
    assert journal_files(tmp_path) == []


# --- the memory bound --------------------------------------------------------------------------------


@pytest.fixture
def queued_ledger(tmp_path, monkeypatch):
    """``governance.metering.writer`` in queued mode without its threads, a bound of 5 and a journal in tmp_path."""
    log = journal.Journal(tmp_path)
    rows, settles = queue.Queue(), queue.Queue()
    monkeypatch.setattr(writer, "_queue", rows)
    monkeypatch.setattr(writer, "_settlements", settles)
    monkeypatch.setattr(writer, "_journal", log)
    monkeypatch.setattr(writer, "_bound", 5)
    monkeypatch.setattr(writer, "_pending", 0)
    yield rows, settles, log
    log.close()


def test_past_the_memory_bound_usage_goes_to_the_journal(queued_ledger, make_vk, tmp_path):
    rows, settles, log = queued_ledger
    vk = make_vk(**LIMITS)
    anchor_windows()
    specs = path_specs(vk)

    for _ in range(3):
        writer.record(usage_row())
    for _ in range(6):
        writer.settle(settlement(vk, specs))

    assert (rows.qsize(), settles.qsize()) == (3, 2)
    assert writer.backlog() == (5, 4)
    log.close()
    assert replay(tmp_path).settlements == 4


def test_at_exit_a_backlog_the_database_does_not_take_is_journaled_the_batch_in_flight_as_maybe(
    queued_ledger, make_vk, tmp_path, monkeypatch
):
    rows, settles, log = queued_ledger
    vk = make_vk(**LIMITS)
    anchor_windows()
    specs = path_specs(vk)
    monkeypatch.setattr(writer, "_closing", threading.Event())
    monkeypatch.setattr(writer, "IN_FLIGHT_GRACE_SECONDS", 0.2)
    monkeypatch.setattr(writer, "_last_failure", writer.time.monotonic())  # the database is failing
    # The settler is stuck in a database call with two settlements; one more and a row are queued.
    in_flight = writer._Held("settle", [settlement(vk, specs), settlement(vk, specs)])
    monkeypatch.setattr(writer, "_held", {in_flight})
    settles.put(settlement(vk, specs))
    rows.put(usage_row())
    monkeypatch.setattr(writer, "_pending", 4)

    assert writer.flush(timeout=5) is True

    assert writer._closing.is_set() and in_flight.journaled
    assert (rows.qsize(), settles.qsize(), writer._pending) == (0, 0, 2)  # the stuck thread lets go of 2
    log.seal_if_idle(idle_seconds=0)
    assert journal_files(tmp_path) != []  # kept open (locked) while the process lives: not claimable
    assert replay(tmp_path) == journal.Replayed()
    log.close()  # the process has exited
    entries = [json.loads(line) for path in journal_files(tmp_path) for line in path.read_text().splitlines()[1:]]
    assert [("settle" in e, e.get("maybe", False)) for e in entries] == [
        (True, True),
        (True, True),
        (False, False),
        (True, False),
    ]
    assert replay(tmp_path).settlements == 3
    assert_counters_equal_the_ledger(vk, 3, Decimal("0.009"), 90)


def test_manage_py_replay_ledger_journal_replays_what_no_process_holds(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    log = journal.Journal(journal.directory())
    log.append("row", [usage_row(), usage_row()])
    log.close()
    out = io.StringIO()

    call_command("replay_ledger_journal", stdout=out)

    assert "1 journal files replayed (2 usage rows, 0 settlements); 0 entries set aside" in out.getvalue()
    assert UsageRecord.objects.count() == 2
    assert not journal.pending()


def test_a_journal_written_before_the_metering_package_still_names_its_classes():
    """Journals outlive upgrades made during an outage: the old module paths still resolve."""
    from governance.metering.counters.base import Admission

    assert journal._class("governance.enforcement:Settlement") is enforcement.Settlement
    assert journal._class("governance.counters.base:Admission") is Admission
    with pytest.raises(ValueError, match="untrusted"):
        journal._class("os:PathLike")
