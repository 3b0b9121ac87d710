"""Requests: Anthropic Messages -> OpenAI chat (``request_to_openai``) and back (``request_from_openai``)."""

from __future__ import annotations

from typing import Any

from proxy.translate import hub
from proxy.translate.anthropic.tables import (
    BUDGET_EFFORTS,
    DEFAULT_MAX_TOKENS,
    EFFORT_BUDGETS,
    JSON_TOOL,
    JSON_TOOL_DESCRIPTION,
    MAX_TEMPERATURE,
    THINKING_TYPES,
    TOOL_CHOICE_FROM_OPENAI,
    TOOL_CHOICE_TO_OPENAI,
    Body,
)
from proxy.translate.hub import TranslationError, compact

# -- small shared pieces ---------------------------------------------------------------------------------


def _no_parameters() -> Body:
    # A fresh object each time: a shared one could be changed through any translated request.
    return {"type": "object", "properties": {}}


def _text_block(text: str) -> Body:
    return {"type": "text", "text": text}


def _joined_text(content: Any, separator: str) -> str:
    """A string, or the text of a list of text blocks joined."""
    if isinstance(content, str):
        return content
    texts = (block.get("text") or "" for block in content or () if block.get("type") == "text")
    return separator.join(texts)


# -- request: Anthropic -> OpenAI ------------------------------------------------------------------------


def request_to_openai(body: Body, model: str) -> Body:
    """An Anthropic Messages request as an OpenAI chat request for ``model``."""
    messages: list[Body] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _joined_text(system, "\n")})
    for i, message in enumerate(body.get("messages") or ()):
        role = message.get("role")
        if role == "user":
            messages.extend(_user_to_openai(message.get("content"), i))
        elif role == "assistant":
            messages.append(_assistant_to_openai(message.get("content"), f"messages[{i}].content"))
        else:
            raise TranslationError(f"messages[{i}].role", f"unknown role {role!r}")
    out: Body = {"model": model, "messages": messages}
    for key in ("max_tokens", "temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    user_id = (body.get("metadata") or {}).get("user_id")
    if user_id:
        out["user"] = user_id
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    _tools_to_openai(body, out)
    effort = _effort(body.get("thinking"))
    if effort:
        out["reasoning_effort"] = effort
    output_format = body.get("output_format") or (body.get("output_config") or {}).get("format")
    if output_format and output_format.get("type") == "json_schema":
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": output_format.get("schema")},
        }
    return out


def _user_to_openai(content: Any, i: int) -> list[Body]:
    """One user message as OpenAI messages: its tool results first (as ``tool`` messages), then the rest."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    messages: list[Body] = []
    parts: list[Body] = []
    for j, block in enumerate(content or ()):
        if block.get("type") == "tool_result":
            messages.append(_tool_result_to_openai(block))
        else:
            parts.append(_user_part(block, f"messages[{i}].content[{j}]"))
    if parts:
        messages.append({"role": "user", "content": parts})
    return messages


def _tool_result_to_openai(block: Body) -> Body:
    text = _joined_text(block.get("content"), "\n")
    if block.get("is_error"):
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": block.get("tool_use_id") or "", "content": text}


def _user_part(block: Body, where: str) -> Body:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text") or ""}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block.get("source") or {}, where)}}
    if kind == "document":
        return _document_part(block.get("source") or {}, where)
    raise TranslationError(where, f"{kind!r} content blocks have no OpenAI equivalent")


def _image_url(source: Body, where: str) -> str:
    kind = source.get("type")
    if kind == "base64":
        return f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data') or ''}"
    if kind == "url":
        return str(source.get("url") or "")  # passed on as a URL, never fetched here
    raise TranslationError(f"{where}.source", f"{kind!r} image sources have no OpenAI equivalent")


def _document_part(source: Body, where: str) -> Body:
    kind = source.get("type")
    if kind == "base64":
        data_url = f"data:{source.get('media_type') or 'application/pdf'};base64,{source.get('data') or ''}"
        return {"type": "file", "file": {"filename": "document.pdf", "file_data": data_url}}
    if kind == "text":
        return {"type": "text", "text": source.get("data") or ""}
    # A URL would have to be fetched by the gateway, which never fetches on a client's behalf.
    raise TranslationError(f"{where}.source", f"{kind!r} document sources are not supported: send the PDF as base64")


def _assistant_to_openai(content: Any, where: str | None) -> Body:
    """Anthropic assistant content as an OpenAI assistant message.

    ``where`` names the content in a request, where an unknown block is an error; None marks an
    upstream answer, where unknown blocks are skipped and a ``JSON_TOOL`` call is the answer's text.
    """
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[Body] = []
    thinking: list[Body] = []
    for j, block in enumerate(content or ()):
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            if where is None and block.get("name") == JSON_TOOL:
                texts.append(compact(block.get("input") or {}))
            else:
                calls.append(_tool_call_to_openai(block))
        elif kind in THINKING_TYPES:
            thinking.append(block)  # verbatim: the signature must come back unchanged
        elif where is not None:
            raise TranslationError(f"{where}[{j}]", f"{kind!r} content blocks have no OpenAI equivalent")
    message: Body = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(b.get("thinking") or "" for b in thinking if b.get("type") == "thinking")
        message["thinking_blocks"] = thinking
    return message


def _tool_call_to_openai(block: Body) -> Body:
    function = {"name": block.get("name") or "", "arguments": compact(block.get("input") or {})}
    return {"id": block.get("id") or "", "type": "function", "function": function}


def _tools_to_openai(body: Body, out: Body) -> None:
    tools: list[Body] = []
    for i, tool in enumerate(body.get("tools") or ()):
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise TranslationError(
                f"tools[{i}]", f"{kind} is an Anthropic built-in tool, which this provider does not offer"
            )
        function: Body = {"name": tool.get("name") or ""}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or _no_parameters()  # the same object, not re-modelled
        tools.append({"type": "function", "function": function})
    if not tools:
        return  # OpenAI rejects tool_choice and parallel_tool_calls without tools
    out["tools"] = tools
    choice = body.get("tool_choice")
    if not choice:
        return
    kind = choice.get("type")
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name") or ""}}
    elif kind in TOOL_CHOICE_TO_OPENAI:
        out["tool_choice"] = TOOL_CHOICE_TO_OPENAI[kind]
    else:
        raise TranslationError("tool_choice", f"unknown tool_choice type {kind!r}")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False


def _effort(thinking: Any) -> str | None:
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens") or 0
    for effort, bound in BUDGET_EFFORTS.items():
        if budget < bound:
            return effort
    return "high"


# -- request: OpenAI -> Anthropic ------------------------------------------------------------------------


def request_from_openai(body: Body, model: str) -> Body:
    """An OpenAI chat request as an Anthropic Messages request for ``model``."""
    _refuse_unsupported(body)
    system, messages = _messages_from_openai(body.get("messages") or ())
    out: Body = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = system
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("temperature") is not None:
        out["temperature"] = min(body["temperature"], MAX_TEMPERATURE)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    user = body.get("user") or body.get("safety_identifier")
    if user:
        out["metadata"] = {"user_id": user}
    thinking = _thinking(body)
    thinking_on = thinking is not None and thinking.get("type") != "disabled"
    _tools_from_openai(body, out, thinking_on=thinking_on)
    if thinking is not None:
        out["thinking"] = thinking
    if thinking is not None and thinking_on:
        _make_room_for_thinking(thinking, out)
    if body.get("stream"):
        out["stream"] = True
    return out


def _refuse_unsupported(body: Body) -> None:
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise TranslationError("n", "Anthropic returns one choice per request: n must be 1")
    if body.get("logprobs"):
        raise TranslationError("logprobs", "Anthropic does not return token log probabilities")
    if body.get("audio") is not None:
        raise TranslationError("audio", "Anthropic does not produce audio output")
    if "audio" in (body.get("modalities") or ()):
        raise TranslationError("modalities", "Anthropic does not produce audio output")


def _messages_from_openai(messages: Any) -> tuple[list[Body], list[Body]]:
    """System blocks (system and developer messages, hoisted in order) and alternating messages."""
    system: list[Body] = []
    out: list[Body] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            text = hub.text_of(message.get("content"))
            if text:
                system.append(_text_block(text))
        elif role == "user":
            _append(out, "user", _user_blocks(message.get("content"), i))
        elif role == "assistant":
            _append(out, "assistant", _assistant_blocks(message, i))
        elif role in ("tool", "function"):
            _append_tool_result(out, _tool_result_from_openai(message))
        else:
            raise TranslationError(f"messages[{i}].role", f"unknown role {role!r}")
    return system, out


def _append(messages: list[Body], role: str, blocks: list[Body]) -> None:
    """Add blocks as a message of ``role``, merged into the previous one of the same role."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _append_tool_result(messages: list[Body], block: Body) -> None:
    """A tool result joins the open user message after its other tool results (Anthropic wants them first)."""
    if not messages or messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": [block]})
        return
    content = messages[-1]["content"]
    k = 0
    while k < len(content) and content[k].get("type") == "tool_result":
        k += 1
    content.insert(k, block)


def _tool_result_from_openai(message: Body) -> Body:
    # A legacy function message names its function instead of a call id (see _assistant_blocks).
    call_id = message.get("tool_call_id") or message.get("name") or ""
    return {"type": "tool_result", "tool_use_id": hub.tool_id(call_id), "content": hub.text_of(message.get("content"))}


def _user_blocks(content: Any, i: int) -> list[Body]:
    if isinstance(content, str):
        return [_text_block(content)] if content else []
    blocks: list[Body] = []
    for j, part in enumerate(content or ()):
        block = _user_block(part, f"messages[{i}].content[{j}]")
        if block is not None:
            blocks.append(block)
    return blocks


def _user_block(part: Body, where: str) -> Body | None:
    kind = part.get("type")
    if kind == "text":
        text = part.get("text") or ""
        return _text_block(text) if text else None
    if kind == "image_url":
        image = part.get("image_url")
        return _image_block(image.get("url") if isinstance(image, dict) else image, where)
    if kind == "file":
        data = hub.parse_data_url((part.get("file") or {}).get("file_data") or "")
        if data and data[0] == "application/pdf":
            return {"type": "document", "source": {"type": "base64", "media_type": data[0], "data": data[1]}}
        raise TranslationError(where, "Anthropic takes files only as PDF data URLs in file_data")
    raise TranslationError(where, f"{kind!r} content parts have no Anthropic equivalent")


def _image_block(url: Any, where: str) -> Body:
    url = str(url or "")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}  # Anthropic fetches it, not the gateway
    data = hub.parse_data_url(url)
    if data is None:
        raise TranslationError(where, "image_url must be a base64 data URL or an http(s) URL")
    return {"type": "image", "source": {"type": "base64", "media_type": data[0], "data": data[1]}}


def _assistant_blocks(message: Body, i: int) -> list[Body]:
    blocks = list(message.get("thinking_blocks") or ())  # verbatim, first: Anthropic verifies them
    content = message.get("content")
    if isinstance(content, str):
        if content:
            blocks.append(_text_block(content))
    else:
        for part in content or ():
            text = part.get("text") or part.get("refusal") or ""
            if text and part.get("type") in ("text", "refusal"):
                blocks.append(_text_block(text))
    if message.get("refusal"):
        blocks.append(_text_block(message["refusal"]))
    for k, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        where = f"messages[{i}].tool_calls[{k}].function.arguments"
        blocks.append(_tool_use(call.get("id") or "", function.get("name") or "", function.get("arguments"), where))
    legacy = message.get("function_call")
    if legacy:
        # No call id in the legacy form: the function name stands for it, as on its result.
        name = legacy.get("name") or ""
        blocks.append(_tool_use(name, name, legacy.get("arguments"), f"messages[{i}].function_call.arguments"))
    return blocks


def _tool_use(call_id: str, name: str, arguments: Any, where: str) -> Body:
    return {
        "type": "tool_use",
        "id": hub.tool_id(call_id),
        "name": name,
        "input": hub.arguments_object(arguments, where),
    }


def _tool_definition(function: Body) -> Body:
    tool: Body = {"name": function.get("name") or ""}
    if function.get("description"):
        tool["description"] = function["description"]
    tool["input_schema"] = function.get("parameters") or _no_parameters()  # the same object, not re-modelled
    return tool


def _tools_from_openai(body: Body, out: Body, *, thinking_on: bool) -> None:
    tools: list[Body] = []
    for i, tool in enumerate(body.get("tools") or ()):
        if tool.get("type") != "function":
            raise TranslationError(f"tools[{i}]", f"{tool.get('type')!r} tools have no Anthropic equivalent")
        tools.append(_tool_definition(tool.get("function") or {}))
    tools.extend(_tool_definition(function) for function in body.get("functions") or ())  # legacy form
    for i, tool in enumerate(tools):
        if tool["name"] == JSON_TOOL:
            raise TranslationError(f"tools[{i}]", f"the tool name {JSON_TOOL} is reserved for JSON mode")
    choice = _tool_choice_from_openai(body.get("tool_choice", body.get("function_call")))
    json_schema = _json_schema(body.get("response_format"))
    if json_schema is not None:
        if thinking_on:
            raise TranslationError(
                "response_format", "Anthropic cannot force the JSON answer while thinking: drop reasoning_effort"
            )
        tools.append({"name": JSON_TOOL, "description": JSON_TOOL_DESCRIPTION, "input_schema": json_schema})
        choice = {"type": "tool", "name": JSON_TOOL}
    if not tools:
        return  # Anthropic rejects tool_choice without tools
    out["tools"] = tools
    if body.get("parallel_tool_calls") is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice:
        out["tool_choice"] = choice


def _tool_choice_from_openai(choice: Any) -> Body | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in TOOL_CHOICE_FROM_OPENAI:
        return {"type": TOOL_CHOICE_FROM_OPENAI[choice]}
    if isinstance(choice, dict):
        # {"type": "function", "function": {"name": N}}, or the legacy function_call {"name": N}
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else choice.get("name")
        if name:
            return {"type": "tool", "name": name}
    raise TranslationError("tool_choice", f"unsupported tool_choice {choice!r}")


def _json_schema(response_format: Any) -> Body | None:
    """The schema JSON mode forces (``{"type": "object"}`` for json_object), None without JSON mode."""
    kind = (response_format or {}).get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
    raise TranslationError("response_format", f"unsupported response_format type {kind!r}")


def _thinking(body: Body) -> Body | None:
    """The Anthropic thinking config: the body's own ``thinking`` as is, else from reasoning_effort."""
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        return thinking
    effort = body.get("reasoning_effort")
    if effort is None or effort == "none":
        return None
    if effort not in EFFORT_BUDGETS:
        raise TranslationError("reasoning_effort", f"unknown reasoning_effort {effort!r}")
    return {"type": "enabled", "budget_tokens": EFFORT_BUDGETS[effort]}


def _make_room_for_thinking(thinking: Body, out: Body) -> None:
    budget = thinking.get("budget_tokens") or 0
    if out["max_tokens"] <= budget:
        out["max_tokens"] += budget  # budget_tokens must be below max_tokens; keep the answer's room
    out.pop("temperature", None)  # Anthropic rejects sampling parameters with thinking
    out.pop("top_p", None)
