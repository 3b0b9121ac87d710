"""UsageRecord INSERTs through the cursor, for the ledger's hot paths. PostgreSQL: one statement
of column arrays, whatever the batch size. SQLite: one prepared single-row statement run for
every row, or one multi-row statement when the new row ids are wanted (``RETURNING``).

Not ``bulk_create``/``create``: building model instances and running every field's generic
conversion costs several times the insert itself, and this runs for every request. Values are
adapted with the backend's own adapters, column by column. A row whose ``request_id`` is
already recorded is skipped (``ON CONFLICT DO NOTHING``): a retried write never counts twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models.constants import OnConflict

from governance.models import Customer, ProviderKey, Team, UsageRecord, VirtualKey

FIELDS = [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]
UUID_COLUMNS = {"request_id", "virtual_key_id", "team_id", "customer_id", "provider_key_id"}
Adapter = Callable[[dict], list]
_adapters: dict[tuple[str, bool], Adapter] = {}


def _adapter(conn) -> Adapter:
    """The function turning one row (field values by attname) into statement parameters in
    ``FIELDS`` order for this backend; built once per backend, since it runs for every request."""
    key = (conn.vendor, conn.features.has_native_uuid_field)
    found = _adapters.get(key)
    if found is not None:
        return found
    ops, native_uuid = conn.ops, key[1]

    def as_uuid(value):
        value = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        return value if native_uuid else value.hex

    cost = UsageRecord._meta.get_field("cost")

    def as_money(value):
        return ops.adapt_decimalfield_value(Decimal(value), cost.max_digits, cost.decimal_places)

    steps = []
    for f in FIELDS:
        if f.attname in UUID_COLUMNS:
            convert = as_uuid
        elif f.attname == "created_at":
            convert = ops.adapt_datetimefield_value
        elif f.attname == "cost":
            convert = as_money
        else:
            convert = None
        # The default is computed only when the row lacks the field (request_id's makes an id).
        steps.append((f.attname, f.get_default, convert))

    def adapt(row: dict) -> list:
        values = []
        for attname, default, convert in steps:
            value = row[attname] if attname in row else default()
            if value is not None and convert is not None:
                value = convert(value)
            values.append(value)
        return values

    _adapters[key] = adapt
    return adapt


def insert_usage_rows(rows: list[dict], *, returning: bool = False) -> dict[uuid.UUID, int]:
    """Insert ``rows`` (UsageRecord field values by attname) in one call; call inside a
    transaction. With ``returning``, answers ``{request_id: new row id}`` for the rows inserted
    (a request already recorded is absent)."""
    if not rows:
        return {}
    conn = connections[DEFAULT_DB_ALIAS]
    ops = conn.ops
    adapt = _adapter(conn)
    quote = ops.quote_name
    columns = ", ".join(quote(f.column) for f in FIELDS)
    one = "(" + ", ".join(["%s"] * len(FIELDS)) + ")"
    suffix = ops.on_conflict_suffix_sql(FIELDS, OnConflict.IGNORE, None, None)
    head = f"{ops.insert_statement(on_conflict=OnConflict.IGNORE)} {quote(UsageRecord._meta.db_table)} ({columns})"
    if conn.vendor == "postgresql":
        # One statement whatever the number of rows: the columns go as arrays and ``unnest`` turns
        # them back into rows. Its text never changes, so psycopg parses it once and the server
        # prepares it once; bound server-side, the values are sent, not quoted into the text. A
        # multi-row VALUES statement is parsed anew for every batch size, and one single-row
        # statement per row costs the server an executor run per row.
        casts = ", ".join(f"%s::{f.db_type(conn)}[]" for f in FIELDS)
        sql = f"{head} SELECT * FROM unnest({casts}) {suffix}"  # noqa: S608 (identifiers and types from the model)
        if returning:
            sql += f" RETURNING {quote('id')}, {quote('request_id')}"
        params = [list(column) for column in zip(*(adapt(row) for row in rows), strict=True)]
        # Wrapped as Django wraps its own cursors: query logging and execute wrappers apply.
        server_bound = psycopg.Cursor(conn.connection)
        cursor = conn.make_debug_cursor(server_bound) if conn.queries_logged else conn.make_cursor(server_bound)
        with cursor:
            cursor.execute(sql, params)
            return {uuid.UUID(str(rid)): pk for pk, rid in cursor.fetchall()} if returning else {}
    if not returning:
        # SQLite: one single-row statement prepared once and run for every row in C; one long
        # statement would be rewritten placeholder by placeholder.
        with conn.cursor() as cursor:
            cursor.executemany(f"{head} VALUES {one} {suffix}", [adapt(row) for row in rows])
        return {}
    sql = f"{head} VALUES {', '.join([one] * len(rows))} {suffix} RETURNING {quote('id')}, {quote('request_id')}"
    params = [value for row in rows for value in adapt(row)]
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return {uuid.UUID(str(request_id)): pk for pk, request_id in cursor.fetchall()}


REFERENCES = {"virtual_key_id": VirtualKey, "team_id": Team, "customer_id": Customer, "provider_key_id": ProviderKey}


def clear_missing_references(rows: list[dict]) -> None:
    """Clear references to keys, teams, customers and provider keys deleted while their requests
    were in flight: the rows keep their usage, as ON DELETE SET NULL would have done, instead of
    failing the whole insert at commit. One query per kind of reference."""
    for field, model in REFERENCES.items():
        wanted = {str(row[field]) for row in rows if row.get(field)}
        if not wanted:
            continue
        existing = {str(pk) for pk in model.objects.filter(pk__in=wanted).values_list("pk", flat=True)}
        for row in rows:
            if row.get(field) and str(row[field]) not in existing:
                row[field] = None
