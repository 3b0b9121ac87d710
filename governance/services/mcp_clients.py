"""MCP clients (upstream MCP servers): create, update, delete, reconnect, and the validation of
their fields shared by the API, the admin and the config import.

Every problem is a field error naming the field (``stdio_config.command``, ``headers``,
``vk_configs[0].virtual_key_id``), all of them reported at once. A duplicate name or client id is
a ``McpClientConflict`` (a ``ValidationError``; the API answers it 409).

Connecting: the services take ``connector`` (``governance.mcp_upstream.Connector``); ``None``
makes no connection (the config import: the gateway connects when a client is used). With a
connector, create (and an update that changes how to connect) first lists the server's tools with
the unsaved configuration, outside any transaction, and saves only when that worked: a server
that cannot be reached leaves nothing behind, and its reason is the error. Per-user OAuth clients
are not tried: the gateway holds no token of its own for them, each user connects with theirs.

Secrets: header values are stored encrypted (``McpClient.set_headers``) and shown masked; a value
sent back exactly as shown masked keeps the stored one, so a client read with GET can be sent back
with PUT. The same holds for ``oauth_config.client_secret`` (stored as given: an ``env.NAME``
reference is the way to keep it out of the database).
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction

from governance.keys import mask_secret
from governance.mcp_upstream import Connector
from governance.models import McpClient, VirtualKey, VirtualKeyMcpConfig
from governance.models.mcp import MCP_CLIENT_NAME_RE, AuthType, ConnectionType
from governance.models.providers import FRAMING_HEADERS, HEADER_NAME_RE, MAX_HEADER_VALUE
from governance.services.validation import FieldProblems, check

# The client's own fields, in the order of ``mcp_client_create``'s parameters.
CLIENT_FIELDS = (
    "name",
    "connection_type",
    "connection_string",
    "stdio_config",
    "auth_type",
    "headers",
    "oauth_config",
    "tools_to_execute",
    "allowed_extra_headers",
    "tool_pricing",
    "timeout_seconds",
    "allow_on_all_virtual_keys",
)
# Fields whose change makes a new connection: an update changing one is tried before it is saved.
CONNECTION_FIELDS = frozenset(
    {"connection_type", "connection_string", "stdio_config", "auth_type", "headers", "oauth_config", "timeout_seconds"}
)
NAME_MESSAGE = (
    "letters, digits, '_' or '-', starting with a letter or digit, at most 63 characters (it prefixes the tool names)"
)
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
ENV_REF_RE = re.compile(r"env\.([A-Za-z_][A-Za-z0-9_]{0,127})")
OAUTH_TEXT_KEYS = ("client_id", "client_secret", "authorize_url", "token_url", "registration_url")
OAUTH_URL_KEYS = ("authorize_url", "token_url", "registration_url")
STDIO_KEYS = ("command", "args", "envs")
MAX_TEXT = 2000
MAX_ITEMS = 256
MIN_TIMEOUT, MAX_TIMEOUT = 0.1, 600.0
PRICE_DECIMALS = 10
MAX_PRICE = Decimal(10**9)
_url = URLValidator(schemes=["http", "https"])
logger = logging.getLogger(__name__)


class McpClientConflict(ValidationError):
    """The name or client id is taken by another client: the API answers 409."""


def _choice(problems: FieldProblems, field: str, value: Any, choices: list[str]) -> str | None:
    if not isinstance(value, str) or value not in choices:
        problems.add(field, f"must be one of {', '.join(choices)}")
        return None
    return value


def _bool(problems: FieldProblems, field: str, value: Any) -> bool | None:
    if not isinstance(value, bool):
        problems.add(field, "must be true or false")
        return None
    return value


def _is_url(value: str) -> bool:
    try:
        _url(value)
    except ValidationError:
        return False
    return True


def clean_whitelist(problems: FieldProblems, field: str, value: Any, *, headers: bool = False) -> list[str] | None:
    """``["*"]`` (all), ``[]`` (none) or distinct names (Bifrost's ``WhiteList``)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.add(field, "must be a list of strings")
        return None
    if len(value) > MAX_ITEMS:
        problems.add(field, f"must have at most {MAX_ITEMS} entries")
        return None
    for item in value:
        if not item.strip() or len(item) > 255 or "\x00" in item:
            problems.add(field, f"{item[:64]!r} is not a valid name (1 to 255 characters, no NUL)")
            return None
        if headers and item != "*" and not HEADER_NAME_RE.fullmatch(item):
            problems.add(field, f"{item[:64]!r} is not a valid header name")
            return None
    if "*" in value and len(value) > 1:
        problems.add(field, "'*' cannot be combined with other entries")
        return None
    duplicates = sorted({item for item in value if value.count(item) > 1})
    if duplicates:
        problems.add(field, f"duplicate entries are not allowed: {', '.join(map(repr, duplicates))}")
        return None
    return value


def clean_whitelist_problems(value: Any, *, headers: bool = False) -> tuple[list[str] | None, list[str]]:
    """``clean_whitelist`` for callers with their own error paths: the list, and the problems."""
    problems = FieldProblems()
    cleaned = clean_whitelist(problems, "value", value, headers=headers)
    return cleaned, problems.errors.get("value", [])


def _clean_connection_string(problems: FieldProblems, value: Any) -> str | None:
    if value is None:
        return ""
    text = problems.text("connection_string", value, max_length=MAX_TEXT)
    if text is None or text == "":
        return text
    if text.startswith("env."):
        if not ENV_REF_RE.fullmatch(text):
            problems.add("connection_string", "env.NAME must name an environment variable (letters, digits, '_')")
            return None
        return text
    if not _is_url(text):
        problems.add("connection_string", "must be an http(s) URL or env.NAME")
        return None
    return text


def _clean_stdio(problems: FieldProblems, value: Any) -> dict[str, Any] | None:
    """``{"command", "args", "envs"}``; ``envs`` is ``{NAME: value | "env.NAME"}``, or Bifrost's list
    of names passed on from the gateway's environment (stored as ``{NAME: "env.NAME"}``)."""
    if value is None or value == {}:
        return {}
    if not isinstance(value, dict):
        problems.add("stdio_config", "must be an object with command, args and envs")
        return None
    unknown = sorted(set(value) - set(STDIO_KEYS))
    if unknown:
        problems.add("stdio_config", f"unknown keys {', '.join(map(repr, unknown))} (allowed: command, args, envs)")
        return None
    command = problems.text("stdio_config.command", value.get("command", ""), max_length=1000)
    args = value.get("args") or []
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        problems.add("stdio_config.args", "must be a list of strings")
        args = None
    elif len(args) > MAX_ITEMS or any(len(arg) > MAX_TEXT or "\x00" in arg for arg in args):
        problems.add("stdio_config.args", f"at most {MAX_ITEMS} arguments of at most {MAX_TEXT} characters, no NUL")
        args = None
    envs = _clean_envs(problems, value.get("envs"))
    if command is None or args is None or envs is None:
        return None
    return {"command": command, "args": args, "envs": envs}


def _clean_envs(problems: FieldProblems, value: Any) -> dict[str, str] | None:
    if value is None:
        return {}
    if isinstance(value, list):  # Bifrost's form: the names of variables to pass on
        if not all(isinstance(name, str) for name in value):
            problems.add("stdio_config.envs", "must be an object of variable name to value, or a list of names")
            return None
        value = {name: f"env.{name}" for name in value}
    if not isinstance(value, dict):
        problems.add("stdio_config.envs", "must be an object of variable name to value, or a list of names")
        return None
    if len(value) > MAX_ITEMS:
        problems.add("stdio_config.envs", f"must have at most {MAX_ITEMS} variables")
        return None
    for name, env_value in value.items():
        if not ENV_NAME_RE.fullmatch(name):
            problems.add("stdio_config.envs", f"{name[:64]!r} is not a valid variable name (letters, digits, '_')")
            return None
        if not isinstance(env_value, str) or len(env_value) > MAX_TEXT or "\x00" in env_value:
            problems.add("stdio_config.envs", f"the value of {name!r} must be a string (no NUL)")
            return None
    return dict(value)


def header_problem(name: Any, value: Any) -> str | None:
    """Why ``name: value`` cannot be sent to an MCP server, or None. Unlike a provider's extra
    headers, credentials (``Authorization``, API keys) are what these headers are for."""
    if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
        return f"invalid header name {str(name)[:128]!r}"
    if name.lower() in FRAMING_HEADERS:
        return f"header {name!r} is not allowed: it frames the message or manages the connection"
    if not isinstance(value, str):
        return f"the value of header {name!r} must be a string"
    if len(value) > MAX_HEADER_VALUE:
        return f"the value of header {name!r} is longer than {MAX_HEADER_VALUE} characters"
    if any(ch in value for ch in "\r\n\x00") or not all(ch == "\t" or 32 <= ord(ch) < 127 for ch in value):
        return f"invalid value for header {name!r}: printable ASCII only, no line breaks or NUL"
    return None


def _clean_headers(problems: FieldProblems, value: Any, stored: dict[str, str]) -> dict[str, str] | None:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add("headers", "must be an object of header name to string value")
        return None
    if len(value) > 64:
        problems.add("headers", "must have at most 64 headers")
        return None
    headers = {}
    for name, header_value in value.items():
        if name in stored and header_value == mask_secret(stored[name][-4:]):
            headers[name] = stored[name]  # sent back as shown: keep the stored value
            continue
        problem = header_problem(name, header_value)
        if problem:
            problems.add("headers", problem)
            return None
        headers[name] = header_value
    return headers


def masked_secret(value: str) -> str:
    """A secret as shown: an ``env.NAME`` reference as written, anything else masked."""
    return value if ENV_REF_RE.fullmatch(value) else mask_secret(value[-4:])


def _clean_oauth(problems: FieldProblems, value: Any, stored: dict[str, Any]) -> dict[str, Any] | None:
    if value is None or value == {}:
        return {}
    if not isinstance(value, dict):
        problems.add("oauth_config", "must be an object")
        return None
    known = (*OAUTH_TEXT_KEYS, "scopes")
    unknown = sorted(set(value) - set(known))
    if unknown:
        problems.add("oauth_config", f"unknown keys {', '.join(map(repr, unknown))} (allowed: {', '.join(known)})")
        return None
    config: dict[str, Any] = {}
    for key in OAUTH_TEXT_KEYS:
        if value.get(key) is None:
            continue
        text = problems.text(f"oauth_config.{key}", value[key], max_length=MAX_TEXT)
        if text is None:
            return None
        if key in OAUTH_URL_KEYS and text and not _is_url(text):
            problems.add(f"oauth_config.{key}", "must be an http(s) URL")
            return None
        if text:
            config[key] = text
    secret = config.get("client_secret")
    if secret and stored.get("client_secret") and secret == masked_secret(stored["client_secret"]):
        config["client_secret"] = stored["client_secret"]  # sent back as shown: keep the stored one
    scopes = value.get("scopes")
    if scopes is not None:
        if not isinstance(scopes, list) or not all(isinstance(s, str) and s and "\x00" not in s for s in scopes):
            problems.add("oauth_config.scopes", "must be a list of non-empty strings")
            return None
        config["scopes"] = scopes
    return config


def _clean_pricing(problems: FieldProblems, value: Any) -> dict[str, str] | None:
    """Tool name → dollars per call, a non-negative decimal (JSON number or string), kept as a string."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add("tool_pricing", "must be an object of tool name to price")
        return None
    if len(value) > MAX_ITEMS:
        problems.add("tool_pricing", f"must price at most {MAX_ITEMS} tools")
        return None
    prices = {}
    for tool, raw in value.items():
        field = f"tool_pricing.{tool}"
        if not tool or len(tool) > 255 or "\x00" in tool:
            problems.add("tool_pricing", f"{tool[:64]!r} is not a valid tool name")
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            problems.add(field, "must be a number (dollars per call)")
            return None
        try:
            price = Decimal(raw.strip() if isinstance(raw, str) else repr(raw))
        except InvalidOperation:
            problems.add(field, "must be a number (dollars per call)")
            return None
        if not price.is_finite() or price < 0:
            problems.add(field, "must be a finite number of dollars, 0 or more")
            return None
        price = price.normalize()
        if price > MAX_PRICE:
            problems.add(field, f"must be at most {MAX_PRICE}")
            return None
        exponent = price.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -PRICE_DECIMALS:
            problems.add(field, f"must have at most {PRICE_DECIMALS} decimal places")
            return None
        prices[tool] = f"{price:f}"
    return prices


def _clean_timeout(problems: FieldProblems, value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.add("timeout_seconds", "must be a number of seconds")
        return None
    if not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        problems.add("timeout_seconds", f"must be between {MIN_TIMEOUT:g} and {MAX_TIMEOUT:g} seconds")
        return None
    return float(value)


def clean_client_fields(data: dict[str, Any], *, current: McpClient | None = None) -> dict[str, Any]:
    """Validate the client fields in ``data`` (raw JSON values, as the API and the import give
    them) and return them cleaned; the fields missing from ``data`` are taken from ``current``
    for the rules that tie fields together. Raises ``ValidationError`` naming every bad field.
    """
    problems = FieldProblems()
    stored_headers = current.headers if current is not None else {}
    stored_oauth = current.oauth_config if current is not None else {}
    cleaners: dict[str, Callable[[Any], Any]] = {
        "name": lambda v: problems.text("name", v, max_length=63),
        "connection_type": lambda v: _choice(problems, "connection_type", v, ConnectionType.values),
        "connection_string": lambda v: _clean_connection_string(problems, v),
        "stdio_config": lambda v: _clean_stdio(problems, v),
        "auth_type": lambda v: _choice(problems, "auth_type", v, AuthType.values),
        "headers": lambda v: _clean_headers(problems, v, stored_headers),
        "oauth_config": lambda v: _clean_oauth(problems, v, stored_oauth),
        "tools_to_execute": lambda v: clean_whitelist(problems, "tools_to_execute", v),
        "allowed_extra_headers": lambda v: clean_whitelist(problems, "allowed_extra_headers", v, headers=True),
        "tool_pricing": lambda v: _clean_pricing(problems, v),
        "timeout_seconds": lambda v: _clean_timeout(problems, v),
        "allow_on_all_virtual_keys": lambda v: _bool(problems, "allow_on_all_virtual_keys", v),
    }
    cleaned: dict[str, Any] = {}
    for name, clean in cleaners.items():
        if name in data:
            value = clean(data[name])
            if name not in problems.errors:
                cleaned[name] = value
    if "name" in cleaned and not MCP_CLIENT_NAME_RE.fullmatch(cleaned["name"]):
        problems.add("name", NAME_MESSAGE)
    _check_together(problems, cleaned, data, current)
    problems.raise_if_any()
    return cleaned


def _check_together(
    problems: FieldProblems, cleaned: dict[str, Any], data: dict[str, Any], current: McpClient | None
) -> None:
    """The rules between fields, on the values after the change (skipped for a field already bad)."""
    bad = set(problems.errors) | {f.split(".")[0] for f in problems.errors}

    def value(field: str, default: Any) -> Any:
        if field in cleaned:
            return cleaned[field]
        return getattr(current, field) if current is not None else default

    kind = value("connection_type", ConnectionType.HTTP)
    auth = value("auth_type", AuthType.NONE)
    if "connection_type" in bad:
        return
    url = value("connection_string", "")
    stdio = value("stdio_config", {})
    if kind in (ConnectionType.HTTP, ConnectionType.SSE):
        if not url and "connection_string" not in bad:
            problems.add("connection_string", f"is required for connection_type '{kind}' (an http(s) URL or env.NAME)")
        if stdio and "stdio_config" not in bad:
            problems.add("stdio_config", "is only for connection_type 'stdio'")
    else:
        if url and "connection_string" not in bad:
            problems.add("connection_string", "is only for connection_type 'http' or 'sse'")
        if not (stdio or {}).get("command") and "stdio_config" not in bad:
            problems.add("stdio_config.command", "is required for connection_type 'stdio'")
        if auth != AuthType.NONE and "auth_type" not in bad:
            problems.add(
                "auth_type", "must be 'none' for connection_type 'stdio' (its environment carries credentials)"
            )
    if "auth_type" in bad:
        return
    if auth == AuthType.HEADERS and not value("headers", {}) and "headers" not in bad:
        problems.add("headers", "at least one header is required when auth_type is 'headers'")
    oauth = value("oauth_config", {})
    if auth in (AuthType.OAUTH, AuthType.PER_USER_OAUTH) and "oauth_config" not in bad:
        complete = all(oauth.get(key) for key in ("authorize_url", "token_url", "client_id"))
        if not complete and not url:
            problems.add(
                "oauth_config",
                f"auth_type '{auth}' needs oauth_config with authorize_url, token_url and client_id, "
                "or a connection_string to discover them from",
            )
    elif oauth and "oauth_config" in data and "oauth_config" not in bad:
        problems.add("oauth_config", "is only for auth_type 'oauth' or 'per_user_oauth'")


def clean_vk_configs(value: Any) -> list[tuple[VirtualKey, list[str]]]:
    """``[{virtual_key_id, tools_to_execute}]`` → the keys and their tools; every problem named."""
    problems = FieldProblems()
    if not isinstance(value, list):
        problems.add("vk_configs", "must be a list of {virtual_key_id, tools_to_execute}")
        problems.raise_if_any()
    rows: list[tuple[VirtualKey, list[str]]] = []
    seen: set[uuid.UUID] = set()
    for index, item in enumerate(value):
        path = f"vk_configs[{index}]"
        if not isinstance(item, dict):
            problems.add(path, "must be an object with virtual_key_id and tools_to_execute")
            continue
        tools = clean_whitelist(problems, f"{path}.tools_to_execute", item.get("tools_to_execute"))
        raw_id = item.get("virtual_key_id")
        try:
            vk_id = uuid.UUID(raw_id) if isinstance(raw_id, str) else None
        except ValueError:
            vk_id = None
        vk = VirtualKey.objects.filter(pk=vk_id).first() if vk_id else None
        if vk is None:
            problems.add(f"{path}.virtual_key_id", f"virtual key {str(raw_id)[:64]!r} does not exist")
        elif vk.pk in seen:
            problems.add(f"{path}.virtual_key_id", f"duplicate virtual key {vk.pk}")
        elif tools is not None:
            seen.add(vk.pk)
            rows.append((vk, tools))
    problems.raise_if_any()
    return rows


def _check_unique(client: McpClient, *, client_id_given: bool = False) -> None:
    others = McpClient.objects.exclude(pk=client.pk) if client.pk else McpClient.objects.all()
    if others.filter(name=client.name).exists():
        raise McpClientConflict({"name": [f"MCP client '{client.name}' already exists"]})
    if client_id_given and others.filter(client_id=client.client_id).exists():
        raise McpClientConflict({"client_id": [f"MCP client id '{client.client_id}' is already used"]})


def assign_fields(client: McpClient, fields: dict[str, Any]) -> None:
    """Put cleaned fields (``clean_client_fields``) on ``client``; headers are encrypted."""
    for name, value in fields.items():
        if name == "headers":
            client.set_headers(value)
        else:
            setattr(client, name, value)


def _unreachable(client: McpClient, exc: Exception) -> ValidationError:
    reason = str(exc).removeprefix(f"MCP client '{client.name}': ")  # said once, by us
    return ValidationError(f"could not connect to MCP server '{client.name}': {reason}")


def _forget(connector: Connector, client_id: str) -> None:
    try:
        connector.forget(client_id)
    except Exception:  # the row is gone (or was never saved) either way; an idle session closes itself
        logger.exception("could not drop the connection of an MCP client", extra={"client_id": client_id})


def try_connect(client: McpClient, connector: Connector) -> list[dict[str, Any]]:
    """List the tools of ``client``'s server with its configuration as it is (saved or not);
    a failure is a ``ValidationError`` saying why. Per-user OAuth clients are not tried."""
    if client.auth_type == AuthType.PER_USER_OAUTH:
        return []
    try:
        return connector.tools(connector.spec_of(client), refresh=True)
    except connector.UpstreamError as exc:
        raise _unreachable(client, exc) from None


def _replace_vk_configs(client: McpClient, rows: list[tuple[VirtualKey, list[str]]]) -> None:
    """This client's VK configs become exactly ``rows`` (Bifrost: ``vk_configs`` replaces them all)."""
    kept = []
    for vk, tools in rows:
        config, _ = VirtualKeyMcpConfig.objects.update_or_create(
            virtual_key=vk, mcp_client=client, defaults={"tools_to_execute": tools}
        )
        kept.append(config.pk)
    VirtualKeyMcpConfig.objects.filter(mcp_client=client).exclude(pk__in=kept).delete()


def mcp_client_create(
    *,
    name: Any,
    connection_type: Any,
    connection_string: Any = "",
    stdio_config: Any = None,
    auth_type: Any = None,
    headers: Any = None,
    oauth_config: Any = None,
    tools_to_execute: Any = None,
    allowed_extra_headers: Any = None,
    tool_pricing: Any = None,
    timeout_seconds: Any = 30.0,
    allow_on_all_virtual_keys: Any = False,
    vk_configs: Any = None,
    client_id: Any = None,
    connector: Connector | None = None,
) -> McpClient:
    """Validate, try the server (with a ``connector``), then save the client and its VK configs.

    ``client_id`` (Bifrost lets the caller choose it) is generated when not given. Without an
    ``auth_type``, a client with headers authenticates with them (``headers``), else ``none``.
    """
    if auth_type is None:
        auth_type = AuthType.HEADERS if headers else AuthType.NONE
    fields = clean_client_fields(
        {
            "name": name,
            "connection_type": connection_type,
            "connection_string": connection_string,
            "stdio_config": stdio_config,
            "auth_type": auth_type,
            "headers": headers,
            "oauth_config": oauth_config,
            "tools_to_execute": tools_to_execute,
            "allowed_extra_headers": allowed_extra_headers,
            "tool_pricing": tool_pricing,
            "timeout_seconds": timeout_seconds,
            "allow_on_all_virtual_keys": allow_on_all_virtual_keys,
        }
    )
    client = McpClient()
    if client_id is not None:
        if not isinstance(client_id, str) or not CLIENT_ID_RE.fullmatch(client_id):
            raise ValidationError({"client_id": ["letters, digits, '_' or '-', at most 64 characters"]})
        client.client_id = client_id
    assign_fields(client, fields)
    check(client, exclude=["name", "client_id"])  # uniqueness is ours to report (409)
    _check_unique(client, client_id_given=client_id is not None)
    rows = clean_vk_configs(vk_configs) if vk_configs is not None else []
    if connector is not None:
        try:
            try_connect(client, connector)  # before any write, outside the transaction
        except ValidationError:
            _forget(connector, client.client_id)  # nothing of a refused client stays in the gateway
            raise
    with transaction.atomic():
        client.save()
        _replace_vk_configs(client, rows)
    return client


def mcp_client_update(*, client: McpClient, connector: Connector | None = None, **changes: Any) -> McpClient:
    """Patch: the fields given change (``None``: kept); ``headers`` given replace them all;
    ``vk_configs`` given replace the client's VK configs. A change to how to connect is tried
    first (with a ``connector``)."""
    unknown = set(changes) - {*CLIENT_FIELDS, "vk_configs"}
    if unknown:
        raise TypeError(f"unexpected fields: {', '.join(sorted(unknown))}")
    given = {field: value for field, value in changes.items() if value is not None and field != "vk_configs"}
    oauth_types = (AuthType.OAUTH, AuthType.PER_USER_OAUTH)
    if given.get("auth_type") not in (None, *oauth_types) and "oauth_config" not in given:
        given["oauth_config"] = {}  # leaving OAuth: its configuration goes with it
    fields = clean_client_fields(given, current=client)
    rows = clean_vk_configs(changes["vk_configs"]) if changes.get("vk_configs") is not None else None
    before = {field: getattr(client, field) for field in CONNECTION_FIELDS}
    assign_fields(client, fields)
    check(client, exclude=["name", "client_id"])
    _check_unique(client)
    if connector is not None and any(getattr(client, field) != before[field] for field in CONNECTION_FIELDS):
        try_connect(client, connector)
    with transaction.atomic():
        client.save()
        if rows is not None:
            _replace_vk_configs(client, rows)
    return client


def mcp_client_delete(*, client: McpClient, connector: Connector | None = None) -> None:
    """Its VK configs go with it (ON DELETE CASCADE); once committed, the gateway drops its connection."""
    client_id = client.client_id
    with transaction.atomic():
        client.delete()
        if connector is not None:
            transaction.on_commit(lambda: _forget(connector, client_id))


def mcp_client_reconnect(*, client: McpClient, connector: Connector) -> list[dict[str, Any]]:
    """Drop and remake the gateway's connection to the server; its tools, listed anew."""
    if client.auth_type == AuthType.PER_USER_OAUTH:
        raise ValidationError(
            f"MCP client '{client.name}' uses per-user OAuth: each user connects with their own token, "
            "there is no shared connection to reconnect"
        )
    try:
        spec = connector.spec_of(client)
        connector.reconnect(spec)
        return connector.tools(spec, refresh=True)
    except connector.UpstreamError as exc:
        raise _unreachable(client, exc) from None
