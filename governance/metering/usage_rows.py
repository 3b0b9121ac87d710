"""UsageRecord INSERTs through the cursor, for the ledger's hot paths. PostgreSQL: one statement
whose rows travel as one JSON text, whatever the batch size. SQLite: one multi-row statement.
Both say which rows they inserted (``RETURNING``).

Every inserted row is added to its hourly and daily rollups in the same statement batch and
transaction (``governance.metering.rollups``).

Not ``bulk_create``/``create``: building model instances and running every field's generic
conversion costs several times the insert itself, and this runs for every request. Values are
adapted with the backend's own adapters, column by column. A row whose ``request_id`` is
already recorded is skipped (``ON CONFLICT DO NOTHING``): a retried write never counts twice.
Text a column cannot hold (NUL, a lone surrogate from a client's JSON) is replaced before the
insert and the rollups read it, so one odd model name never fails a whole batch.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.constants import OnConflict

from governance.metering import rollups
from governance.models import Customer, ProviderKey, RequestContent, Team, UsageRecord, VirtualKey
from governance.models.usage import new_request_id

FIELDS = [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]
UUID_COLUMNS = {"request_id", "virtual_key_id", "team_id", "customer_id", "provider_key_id"}
MONEY_COLUMNS = {"cost", "input_cost", "output_cost"}
TEXT_COLUMNS = [f.attname for f in FIELDS if f.get_internal_type() in ("CharField", "TextField")]
Adapter = Callable[[dict], list]
SQLITE_ROWS = 500


@dataclass(frozen=True)
class Statements:
    """What a backend needs to insert rows, built once per backend: this runs for every request."""

    adapt: Adapter  # one row (field values by attname) -> parameters in ``FIELDS`` order
    head: str  # INSERT ... INTO table (columns)
    one: str  # the placeholders of one row
    suffix: str  # ON CONFLICT DO NOTHING, as the backend writes it
    returning: str  # RETURNING id, request_id
    columns_from_json: str  # PostgreSQL: each column of a JSON row ``r`` (an array in FIELDS order)


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
        elif f.attname in MONEY_COLUMNS:
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
        columns_from_json=", ".join(f"(r->>{index})::{f.db_type(conn)}" for index, f in enumerate(FIELDS)),
    )


def insert_usage_rows(rows: list[dict], *, returning: bool = False) -> dict[uuid.UUID, int]:
    """Insert ``rows`` (UsageRecord field values by attname) in one call, and add the rows
    actually inserted to their hourly and daily rollups (``rollups.add``); call inside a
    transaction. With ``returning``, answers ``{request_id: new row id}`` for the rows inserted
    (a request already recorded is absent)."""
    if not rows:
        return {}
    for row in rows:
        if not row.get("request_id"):  # known before the insert, to tell which rows it inserted
            row["request_id"] = new_request_id()
        for name in TEXT_COLUMNS:  # before the rollups read them too
            text = row.get(name)
            if isinstance(text, str) and (not text.isascii() or "\x00" in text):
                row[name] = _storable(text)
    # Bodies first (content logging; idempotent on request_id): the tables are then written in
    # the order PostgreSQL's table locks (a TRUNCATE, a migration) take them, which never deadlocks.
    _insert_content([row for row in rows if row.get("content")])
    conn = connections[DEFAULT_DB_ALIAS]
    st = _prepared(conn)
    if conn.vendor == "postgresql":
        # One statement whatever the number of rows: the rows go as ONE JSON text (an array of
        # arrays in ``FIELDS`` order) and each column is cast from it to its own type by the
        # server. The text never changes, so psycopg parses it once and the server prepares it
        # once; the one parameter is dumped by ``json.dumps`` in C. Column arrays (``unnest``)
        # measured several times the client CPU: psycopg dumps arrays element by element in
        # Python. A multi-row VALUES statement is parsed anew for every batch size, and one
        # single-row statement per row costs the server an executor run per row. Exact: money
        # goes as decimal text and timestamps as ISO text, read by the columns' own input rules.
        rows_in = f"SELECT {st.columns_from_json} FROM json_array_elements(%s::json) AS r"  # noqa: S608 (from the model)
        sql = f"{st.head} {rows_in} {st.suffix} {st.returning}"
        params = [json.dumps([st.adapt(row) for row in rows], default=_json_scalar, separators=(",", ":"))]
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
            inserted = {_uuid(rid): pk for pk, rid in cursor.fetchall()}
    else:
        # SQLite: multi-row statements, so that RETURNING says which rows were new (executemany
        # cannot return rows), of at most SQLITE_ROWS rows (SQLite binds at most 32,766 values).
        inserted = {}
        with conn.cursor() as cursor:
            for at in range(0, len(rows), SQLITE_ROWS):
                part = rows[at : at + SQLITE_ROWS]
                sql = f"{st.head} VALUES {', '.join([st.one] * len(part))} {st.suffix} {st.returning}"
                cursor.execute(sql, [value for row in part for value in st.adapt(row)])
                inserted.update((_uuid(request_id), pk) for pk, request_id in cursor.fetchall())
    new = rows if len(inserted) == len(rows) else [row for row in rows if _uuid(row["request_id"]) in inserted]
    rollups.add(new)
    return inserted if returning else {}


def _storable(text: str) -> str:
    """``text`` as a text column can hold it: NUL characters (PostgreSQL's text cannot hold them)
    and lone surrogates (a client's JSON may carry ``\\ud800``; UTF-8 cannot) replaced. One in a
    client's model name or an upstream's error message must not fail its batch's insert."""
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _json_scalar(value: object) -> str:
    """The JSON text of a value ``json`` cannot write: as its column's input reads it."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"no JSON form for {type(value).__name__}")


def _insert_content(rows: list[dict]) -> None:
    """The bodies of the rows that carry them (content logging: ``governance.models.content``)."""
    if rows:
        RequestContent.objects.bulk_create(
            [
                RequestContent(
                    request_id=_uuid(row["request_id"]),
                    created_at=row["created_at"],
                    request_body=_storable(row["content"][0]),
                    response_body=_storable(row["content"][1]),
                    truncated=bool(row["content"][2]),
                )
                for row in rows
            ],
            ignore_conflicts=True,
        )


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


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
