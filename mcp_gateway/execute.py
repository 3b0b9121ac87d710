"""``POST /v1/mcp/tool/execute``: one tool call an application got back from a model, run for its
virtual key under the same filtering, governance and ledger as ``/mcp`` (``mcp_gateway.tools``).

Bodies, as Bifrost's: with ``?format=chat`` (the default) an OpenAI chat ``tool_call``
(``{"id", "type": "function", "function": {"name", "arguments": "<JSON>"}}``), answered with the
tool message to append to the conversation (``{"role": "tool", "tool_call_id", "content"}``);
with ``?format=responses`` a Responses ``function_call`` item (``{"type": "function_call",
"call_id", "name", "arguments"}``), answered with its ``function_call_output`` item. The tool's
text blocks become the content (other blocks as their JSON); a tool error is the same message
with ``is_error`` true beside it. An unknown tool or a malformed body is a 400.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from bifrost_site import json_text
from bifrost_site.errors import error_response
from governance.metering import freshness
from mcp_gateway import access, tools
from mcp_gateway.access import AccessDenied


def _content_text(result: dict[str, Any]) -> str:
    parts = []
    for block in result.get("content") or ():
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            parts.append(json.dumps(block, separators=(",", ":")))
    return "\n".join(parts)


def _call_of(body: Any, responses: bool) -> tuple[str, str, Any]:
    """``(call id, tool name, arguments)`` of the body (ValueError naming the field)."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    if responses:
        call_id, name, raw = body.get("call_id"), body.get("name"), body.get("arguments")
        where = ""
    else:
        function = body.get("function")
        if not isinstance(function, dict):
            raise ValueError("function is required: {'name': ..., 'arguments': '<JSON object>'}")
        call_id, name, raw = body.get("id"), function.get("name"), function.get("arguments")
        where = "function."
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}name is required")
    if raw in (None, ""):
        arguments: Any = {}
    elif isinstance(raw, str):
        try:
            arguments = json_text.loads(raw)
        except json_text.LoneSurrogate as exc:
            raise ValueError(f"{where}arguments: {exc}") from None
        except ValueError:
            raise ValueError(f"{where}arguments must be a JSON object (as a string)") from None
    else:
        arguments = raw
    if not isinstance(arguments, dict):
        raise ValueError(f"{where}arguments must be a JSON object")
    return str(call_id or ""), name, arguments


@csrf_exempt
def execute(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        response = error_response(405, "Method not allowed: use POST")
        response["Allow"] = "POST"
        return response
    form = request.GET.get("format") or "chat"
    if form not in ("chat", "responses"):
        return error_response(400, "format must be 'chat' or 'responses'")
    try:
        body = json_text.loads(request.body or b"null")
        call_id, name, arguments = _call_of(body, form == "responses")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        message = (
            str(exc) if isinstance(exc, ValueError) and not isinstance(exc, json.JSONDecodeError) else "Invalid JSON"
        )
        return error_response(400, message)
    for _ in range(freshness.MAX_RESTARTS):
        try:
            return _run(request, form, call_id, name, arguments)
        except freshness.StaleConfig:  # decided on configuration that changed: start over
            continue
    return error_response(503, "The gateway's configuration kept changing; retry shortly", headers={"Retry-After": "1"})


def _run(request: HttpRequest, form: str, call_id: str, name: str, arguments: Any) -> HttpResponse:
    freshness.begin_request()
    try:
        caller = access.caller_of(request.META)
        result = tools.run(request, caller, name, arguments)
        freshness.confirm()  # a refusal decided on old configuration is not given
    except AccessDenied as exc:
        freshness.confirm()
        return error_response(exc.status, exc.message, type_=exc.type_)
    except tools.InvalidCall as exc:
        freshness.confirm()
        return error_response(400, exc.message)
    text = _content_text(result)
    is_error = bool(result.get("isError"))
    if form == "responses":
        return JsonResponse({"type": "function_call_output", "call_id": call_id, "output": text, "is_error": is_error})
    return JsonResponse({"role": "tool", "tool_call_id": call_id, "content": text, "is_error": is_error})
