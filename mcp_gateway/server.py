"""``/mcp``: the gateway as an MCP server (streamable HTTP, stateless, JSON answers).

``POST /mcp`` takes one JSON-RPC 2.0 message and answers one JSON response (a notification:
202, no body); ``GET /mcp`` is 405 with ``Allow: POST`` (the spec lets a server offer no event
stream, and no thread is held open). No ``Mcp-Session-Id`` is issued: every request carries its
own credentials and is decided from committed configuration.

Methods: ``initialize`` (capabilities ``tools``; ``serverInfo.name`` is the VK's name, or
``global``; the client's protocol version echoed when it is one of :data:`PROTOCOL_VERSIONS`,
else the newest), ``ping``, ``tools/list``, ``tools/call``; any other method is ``-32601``.
Malformed JSON is ``-32700`` and anything that is not one request object (a batch included, which
the current spec removed) ``-32600``, both with HTTP 400. Identity problems are HTTP 401/403
(``mcp_gateway.access``); a tools/call refused by governance (429 request limits, 402 budgets,
403 ``mcp_tool_blocked``) or failed upstream is a tool result with ``isError: true`` and the
message, as Bifrost answers; an unknown tool is ``-32602``. The upstream's result (its content
blocks and ``isError``) is returned unchanged (``mcp_gateway.tools``).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from bifrost_site import json_text
from consent.http import public_base_url
from governance.metering import freshness
from mcp_gateway import access, tools
from mcp_gateway.access import AccessDenied, Caller

PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
SERVER_VERSION = "1.0"
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
INTERNAL_ERROR = -32603
AUTH_ERROR = -32001  # server-defined: the caller may not use /mcp (HTTP 401/403 beside it)


def _rpc_error(request_id: Any, code: int, message: str, status: int = 200) -> JsonResponse:
    payload = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    return JsonResponse(payload, status=status)


def _rpc_result(request_id: Any, result: dict[str, Any]) -> JsonResponse:
    return JsonResponse({"jsonrpc": "2.0", "id": request_id, "result": result})


def _denied(request: HttpRequest, request_id: Any, exc: AccessDenied) -> HttpResponse:
    # A JSON-RPC error body (with the HTTP status): MCP clients show its message to the user.
    error = {"code": AUTH_ERROR, "message": exc.message, "data": {"type": exc.type_, "status_code": exc.status}}
    response = JsonResponse({"jsonrpc": "2.0", "id": request_id, "error": error}, status=exc.status)
    if exc.status == 401 and exc.challenge:
        metadata = public_base_url(request) + "/.well-known/oauth-protected-resource"
        response["WWW-Authenticate"] = f'Bearer resource_metadata="{metadata}"'
    return response


@csrf_exempt
def endpoint(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        response = HttpResponse(status=405)
        response["Allow"] = "POST"
        return response
    try:
        message = json_text.loads(request.body or b"")
    except json_text.LoneSurrogate as exc:
        return _rpc_error(None, PARSE_ERROR, f"Parse error: {exc}", status=400)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _rpc_error(None, PARSE_ERROR, "Parse error: the body is not JSON", status=400)
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"), str):
        what = "a batch (one message per request)" if isinstance(message, list) else "not a JSON-RPC 2.0 request"
        return _rpc_error(
            message.get("id") if isinstance(message, dict) else None, INVALID_REQUEST, f"Invalid Request: {what}", 400
        )
    version = request.META.get("HTTP_MCP_PROTOCOL_VERSION")
    if version is not None and version not in PROTOCOL_VERSIONS and message["method"] != "initialize":
        supported = ", ".join(PROTOCOL_VERSIONS)
        message_text = f"Unsupported MCP-Protocol-Version: {version[:40]} (supported: {supported})"
        return _rpc_error(message.get("id"), INVALID_REQUEST, message_text, 400)
    # Decided on configuration that changed meanwhile (before any upstream call): start over, as
    # inference does (``governance.metering.freshness``).
    for _ in range(freshness.MAX_RESTARTS):
        try:
            return _answer(request, message)
        except freshness.StaleConfig:
            continue
    error = "The gateway's configuration kept changing while this request was decided; retry shortly"
    return _rpc_error(message.get("id"), INTERNAL_ERROR, error, status=503)


def _answer(request: HttpRequest, message: dict[str, Any]) -> HttpResponse:
    freshness.begin_request()
    try:
        caller = access.caller_of(request.META)
    except AccessDenied as exc:
        freshness.confirm()  # a refusal decided on old configuration is not given
        return _denied(request, message.get("id"), exc)
    if "id" not in message:  # a notification (initialized, cancelled, ...): accepted, not answered
        return HttpResponse(status=202)
    request_id, method = message["id"], message["method"]
    params = message.get("params") or {}
    if not isinstance(params, dict):
        return _rpc_error(request_id, INVALID_PARAMS, "params must be an object")
    if method == "tools/call":  # a call confirms freshness before its upstream call; refusals below
        name, arguments = params.get("name"), params.get("arguments")
        try:
            result = tools.run(request, caller, name, arguments)
        except tools.InvalidCall as exc:
            freshness.confirm()
            return _rpc_error(request_id, INVALID_PARAMS, exc.message)
        freshness.confirm()
        return _rpc_result(request_id, result)
    if method == "initialize":
        result = _initialize(caller, params)
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": tools.listed(access.grants(caller, request.META), caller)}
    else:
        return _rpc_error(request_id, METHOD_NOT_FOUND, f"Method not found: {method}")
    freshness.confirm()
    return _rpc_result(request_id, result)


def _initialize(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    asked = params.get("protocolVersion")
    version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1]
    return {
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": {"name": caller.vk.name if caller.vk is not None else "global", "version": SERVER_VERSION},
    }
