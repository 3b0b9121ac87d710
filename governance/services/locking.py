"""Row locks taken before a delete that usage rows may be racing with."""

from __future__ import annotations

from django.db.models import QuerySet


def lock_before_delete(queryset: QuerySet) -> None:
    """Lock the rows about to be deleted before Django collects what refers to them.

    Usage records refer to virtual keys, teams, customers and provider keys with ON DELETE SET
    NULL, which Django runs in Python: it nulls the records it finds, then deletes. A usage row a
    gateway worker inserts in between would make the delete fail at commit. With the rows locked
    first, such an insert (its foreign-key check takes a share lock on the referenced row) either
    committed before the collector looks, or waits and then finds the row gone, and the ledger
    keeps it with the reference cleared. On SQLite writers are serialized anyway.
    """
    list(queryset.select_for_update().values_list("pk", flat=True))
