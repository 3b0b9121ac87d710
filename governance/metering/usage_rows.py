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
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.constants import OnConflict

from governance.models import Customer, ProviderKey, Team, UsageRecord, VirtualKey

FIELDS = [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]
UUID_COLUMNS = {"request_id", "virtual_key_id", "team_id", "customer_id", "provider_key_id"}
Adapter = Callable[[dict], list]


@dataclass(frozen=True)
class Statements:
    """What a backend needs to insert rows, built once per backend: this runs for every request."""

    adapt: Adapter  # one row (field values by attname) -> parameters in ``FIELDS`` order
    head: str  # INSERT ... INTO table (columns)
    one: str  # the placeholders of one row
    suffix: str  # ON CONFLICT DO NOTHING, as the backend writes it
    returning: str  # RETURNING id, request_id
    columns_as_arrays: str  # %s::type[] per column, for PostgreSQL's unnest


_statements: dict[tuple[str, bool], Statements] = {}


def _prepared(conn: BaseDatabaseWrapper) -> Statements:
    key = (conn.vendor, conn.features.has_native_uuid_field)
    found = _statements.get(key)
    if found is None:
        found = _statements[key] = _build(conn, native_uuid=key[1])
    return found


def _build(conn: BaseDatabaseWrapper, *, native_uuid: bool) -> Statements:
    ops = conn.ops

    def as_uuid(value: object) -> uuid.UUID | str:
        value = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        return value if native_uuid else value.hex

    cost = UsageRecord._meta.get_field("cost")

    def as_money(value: Decimal | int | str) -> str | None:
        return ops.adapt_decimalfield_value(Decimal(value), cost.max_digits, cost.decimal_places)

    convert: Callable[[Any], Any] | None
    steps: list[tuple[str, Callable[[], Any], Callable[[Any], Any] | None]] = []
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

    quote = ops.quote_name
    columns = ", ".join(quote(f.column) for f in FIELDS)
    return Statements(
        adapt=adapt,
        head=f"{ops.insert_statement(on_conflict=OnConflict.IGNORE)} {quote(UsageRecord._meta.db_table)} ({columns})",
        one="(" + ", ".join(["%s"] * len(FIELDS)) + ")",
        suffix=ops.on_conflict_suffix_sql(FIELDS, OnConflict.IGNORE, None, None),
        returning=f"RETURNING {quote('id')}, {quote('request_id')}",
        columns_as_arrays=", ".join(f"%s::{f.db_type(conn)}[]" for f in FIELDS),
    )


def insert_usage_rows(rows: list[dict], *, returning: bool = False) -> dict[uuid.UUID, int]:
    """Insert ``rows`` (UsageRecord field values by attname) in one call; call inside a
    transaction. With ``returning``, answers ``{request_id: new row id}`` for the rows inserted
    (a request already recorded is absent)."""
    if not rows:
        return {}
    conn = connections[DEFAULT_DB_ALIAS]
    st = _prepared(conn)
    if conn.vendor == "postgresql":
        # One statement whatever the number of rows: the columns go as arrays and ``unnest`` turns
        # them back into rows. Its text never changes, so psycopg parses it once and the server
        # prepares it once; bound server-side, the values are sent, not quoted into the text. A
        # multi-row VALUES statement is parsed anew for every batch size, and one single-row
        # statement per row costs the server an executor run per row.
        sql = f"{st.head} SELECT * FROM unnest({st.columns_as_arrays}) {st.suffix}"  # noqa: S608 (identifiers and types from the model)
        if returning:
            sql += f" {st.returning}"
        params = [list(column) for column in zip(*(st.adapt(row) for row in rows), strict=True)]
        # Wrapped as Django wraps its own cursors: query logging and execute wrappers apply.
        server_bound = psycopg.Cursor(conn.connection)
        # The stubs want a CursorWrapper, but these wrap a raw DB-API cursor (Django passes create_cursor()'s).
        cursor = (
            conn.make_debug_cursor(server_bound)  # type: ignore[arg-type]
            if conn.queries_logged
            else conn.make_cursor(server_bound)  # type: ignore[arg-type]
        )
        with cursor:
            cursor.execute(sql, params)
            return {uuid.UUID(str(rid)): pk for pk, rid in cursor.fetchall()} if returning else {}
    if not returning:
        # SQLite: one single-row statement prepared once and run for every row in C; one long
        # statement would be rewritten placeholder by placeholder.
        with conn.cursor() as cursor:
            cursor.executemany(f"{st.head} VALUES {st.one} {st.suffix}", [st.adapt(row) for row in rows])
        return {}
    sql = f"{st.head} VALUES {', '.join([st.one] * len(rows))} {st.suffix} {st.returning}"
    params = [value for row in rows for value in st.adapt(row)]
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return {uuid.UUID(str(request_id)): pk for pk, request_id in cursor.fetchall()}


REFERENCES: dict[str, type[VirtualKey] | type[Team] | type[Customer] | type[ProviderKey]] = {
    "virtual_key_id": VirtualKey,
    "team_id": Team,
    "customer_id": Customer,
    "provider_key_id": ProviderKey,
}


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
