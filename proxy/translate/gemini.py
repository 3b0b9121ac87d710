"""Google Gemini ``generateContent`` / ``streamGenerateContent?alt=sse`` <-> OpenAI Chat Completions.

The Gemini side is the REST wire format as the ``google-genai`` SDK sends it: camelCase at the top
but snake_case in some nested objects (``inlineData.mime_type``, ``thinkingConfig.thinking_budget``,
``parameters_json_schema``), which Google's JSON parser accepts alike, so every multi-word field is
read in either spelling. The model is in the URL, never in the body.

Decisions:

- tool-call ids: Gemini's ``functionCall.id`` when present, else ``call_<k>_<digest>`` of the turn
  (or candidate) index, the call's index and its name, so the same history maps to the same ids on
  every turn and a ``functionResponse`` without an id finds its call (the k-th response named N is
  the k-th call named N of the preceding model turn). A response's digest also covers its
  ``responseId``, so two answers of one conversation never reuse an id.
- thought signatures ride in the tool-call id (``hub.join_signature``) and return as the part-level
  ``thoughtSignature`` beside the ``functionCall``; signatures on text parts are dropped (Gemini
  only requires those of function calls), and reasoning text is never sent back upstream.
- tool schemas pass through as the very same object (``parametersJsonSchema`` upstream), never
  re-modelled; Gemini built-in tools, ``cachedContent``, non-text output modalities, and media an
  OpenAI model cannot read are a :class:`hub.TranslationError` naming the field.
- all tool results of a parallel call go into one ``user`` content; same-role contents are merged.
- a user turn's ``functionResponse`` parts become ``tool`` messages ahead of its other parts (OpenAI
  wants them right after the assistant's ``tool_calls``).
- usage: ``promptTokenCount`` already includes the cached tokens; ``toolUsePromptTokenCount`` is
  added to the prompt, ``thoughtsTokenCount`` to the completion.
- streams: Gemini sends each function call whole, so OpenAI tool-call fragments are held until the
  call is complete; the finish reason is sent at the end, ``tool_calls`` when any call was seen
  (Gemini may send its STOP in a frame of its own after the call).
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
from functools import lru_cache
from typing import Any

from proxy.translate import hub

# Gemini finishReason -> OpenAI finish_reason; anything else (OTHER, MALFORMED_FUNCTION_CALL, ...) is "stop".
FINISH_TO_OPENAI: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "MODEL_ARMOR": "content_filter",
    "MALFORMED_FUNCTION_CALL": "stop",
}

# OpenAI finish_reason -> Gemini finishReason; unknown ones are "STOP". Gemini has no tool-call
# reason: a turn that ends in function calls ends with STOP.
FINISH_FROM_OPENAI: dict[str, str] = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "function_call": "STOP",
    "content_filter": "SAFETY",
}

# HTTP status -> google.rpc canonical status name of Gemini's error bodies.
ERROR_STATUSES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "FAILED_PRECONDITION",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# The canonical names: an upstream Gemini error's own status (StreamError.type_) is kept as it is.
_CANONICAL_STATUSES = frozenset(ERROR_STATUSES.values()) | {
    "OK",
    "UNKNOWN",
    "ALREADY_EXISTS",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "DATA_LOSS",
}

# thinkingConfig.thinkingBudget -> reasoning_effort: the first bound the budget is below; -1
# (dynamic, the model decides) is "medium"; 0 (thinking off) sends no effort at all.
THINKING_BUDGET_EFFORTS: tuple[tuple[int, str], ...] = ((2048, "low"), (16384, "medium"))
THINKING_BUDGET_TOP_EFFORT = "high"
THINKING_DYNAMIC_EFFORT = "medium"
# thinkingConfig.thinkingLevel (the SDK sends it upper-case) -> reasoning_effort.
THINKING_LEVELS: dict[str, str] = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high"}
# reasoning_effort -> thinkingConfig.thinkingBudget; a budget of 0 turns thinking off.
EFFORT_BUDGETS: dict[str, int] = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}

# functionCallingConfig.mode <-> tool_choice.
TOOL_MODES_TO_OPENAI: dict[str, str] = {"AUTO": "auto", "ANY": "required", "NONE": "none", "VALIDATED": "auto"}
TOOL_CHOICES_FROM_OPENAI: dict[str, str] = {"auto": "AUTO", "required": "ANY", "none": "NONE"}

# OpenAI input_audio formats <-> Gemini audio media types (OpenAI reads only these two).
AUDIO_FORMATS: dict[str, str] = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/mp3": "mp3", "audio/mpeg": "mp3"}

# Gemini parts that only its own tools produce: named in the error rather than silently dropped.
_UNSUPPORTED_PARTS = ("executableCode", "codeExecutionResult", "toolCall", "toolResponse")
_GEMINI_FILES_HOST = "generativelanguage.googleapis.com"
_MODEL_METHODS = ["generateContent", "streamGenerateContent", "countTokens"]
_BLOCKED = "The prompt was blocked: {}"
_NO_FINISH = "the upstream stream ended before its finish reason"


# -- shared helpers ---------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda match: "_" + match.group(1).lower(), name)


def _get(obj: dict[str, Any], name: str) -> Any:
    """``obj[name]`` in camelCase or, as the SDK sends some nested fields, in snake_case."""
    value = obj.get(name)
    return obj.get(_snake(name)) if value is None else value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _digest(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _call_id(scope: str, position: int, name: str) -> str:
    """The id of a function call that came without one: the same call always gets the same id."""
    return f"call_{position}_{_digest(f'{scope}:{position}:{name}')}"


def _finish_to_openai(reason: Any) -> str:
    return FINISH_TO_OPENAI.get(reason, "stop") if isinstance(reason, str) else "stop"


def _event(payload: dict[str, Any]) -> bytes:
    # Gemini ends its SSE events with CRLF pairs; the SDK splits on any blank line.
    return b"data: " + hub.compact(payload).encode() + b"\r\n\r\n"


def _error_object(status: int, message: str, type_: str | None = None) -> dict[str, Any]:
    if type_ in _CANONICAL_STATUSES:
        name = type_
    else:
        name = ERROR_STATUSES.get(status) or ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    return {"error": {"code": status, "message": message, "status": name}}


def _usage_to_openai(metadata: Any) -> dict[str, Any]:
    meta = _dict(metadata)
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    cached = int(meta.get("cachedContentTokenCount") or 0)
    return hub.usage(prompt, completion, cached=cached, reasoning=thoughts)


def _usage_from_openai(usage: Any) -> dict[str, Any]:
    use = _dict(usage)
    prompt = int(use.get("prompt_tokens") or 0)
    completion = int(use.get("completion_tokens") or 0)
    reasoning = int(_dict(use.get("completion_tokens_details")).get("reasoning_tokens") or 0)
    cached = int(_dict(use.get("prompt_tokens_details")).get("cached_tokens") or 0)
    out: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": max(completion - reasoning, 0),
        "totalTokenCount": int(use.get("total_tokens") or prompt + completion),
    }
    if reasoning > 0:
        out["thoughtsTokenCount"] = reasoning
    if cached > 0:
        out["cachedContentTokenCount"] = cached
    return out


def _openai_call(call: dict[str, Any], scope: str, position: int, signature: Any) -> dict[str, Any]:
    """A Gemini functionCall (+ its part's thought signature) as an OpenAI tool call."""
    name = str(call.get("name") or "")
    call_id = call.get("id") or _call_id(scope, position, name)
    args = call.get("args")
    return {
        "id": hub.join_signature(str(call_id), signature if isinstance(signature, str) else None),
        "type": "function",
        "function": {"name": name, "arguments": hub.compact(args if isinstance(args, dict) else {})},
    }


def _gemini_call_part(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    """An OpenAI tool call as a Gemini functionCall part for a client (unparsable arguments -> {})."""
    try:
        args = hub.arguments_object(arguments, "arguments")
    except hub.TranslationError:
        args = {}
    base, signature = hub.split_signature(call_id)
    call: dict[str, Any] = {"name": name, "args": args}
    if base:
        call["id"] = base
    part: dict[str, Any] = {"functionCall": call}
    if signature:
        part["thoughtSignature"] = signature
    return part


# -- request: Gemini -> OpenAI ----------------------------------------------------------------


def _system_text(instruction: Any) -> str:
    if isinstance(instruction, str):
        return instruction
    parts = instruction if isinstance(instruction, list) else _list(_dict(instruction).get("parts"))
    texts = [part if isinstance(part, str) else _dict(part).get("text") for part in parts]
    return "\n".join(text for text in texts if isinstance(text, str) and text)


def _media_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    """An inlineData or fileData part as an OpenAI content part."""
    inline = _get(part, "inlineData")
    if isinstance(inline, dict):
        mime = str(_get(inline, "mimeType") or "")
        data = str(inline.get("data") or "")
        if mime.startswith("image/"):
            return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}
        if mime == "application/pdf":
            filename = _get(inline, "displayName") or "document.pdf"
            return {"type": "file", "file": {"filename": filename, "file_data": f"data:{mime};base64,{data}"}}
        if mime in AUDIO_FORMATS:
            return {"type": "input_audio", "input_audio": {"data": data, "format": AUDIO_FORMATS[mime]}}
        raise hub.TranslationError(f"{where}.inlineData", f"media type {mime or '(none)'} is not supported here")
    file_data = _dict(_get(part, "fileData"))
    uri = str(_get(file_data, "fileUri") or "")
    mime = str(_get(file_data, "mimeType") or mimetypes.guess_type(uri)[0] or "")
    # A Gemini File API upload lives on Google's side: no other provider can read it.
    if uri.startswith(("http://", "https://")) and mime.startswith("image/") and _GEMINI_FILES_HOST not in uri:
        return {"type": "image_url", "image_url": {"url": uri}}
    raise hub.TranslationError(
        f"{where}.fileData", "only http(s) image URLs can be passed on (not Gemini File API uploads or other media)"
    )


def _function_output(response: Any) -> str:
    if isinstance(response, dict) and len(response) == 1 and isinstance(response.get("result"), str):
        return str(response["result"])
    return hub.compact(response if response is not None else {})


def _model_turn(parts: list[Any], turn: int, where: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A model content as an assistant message, and the (name, id) of each of its calls."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    named: list[tuple[str, str]] = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            continue
        call = _get(part, "functionCall")
        if isinstance(call, dict):
            tool_call = _openai_call(call, str(turn), len(calls), _get(part, "thoughtSignature"))
            calls.append(tool_call)
            named.append((tool_call["function"]["name"], tool_call["id"]))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
        elif _get(part, "functionResponse") is not None:
            raise hub.TranslationError(f"{where}.parts[{j}].functionResponse", "belongs in a user turn")
        elif _get(part, "inlineData") is not None or _get(part, "fileData") is not None:
            raise hub.TranslationError(f"{where}.parts[{j}]", "media in a model turn cannot be passed on")
        else:
            _reject_unsupported(part, f"{where}.parts[{j}]")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message, named


def _reject_unsupported(part: dict[str, Any], where: str) -> None:
    for key in _UNSUPPORTED_PARTS:
        if _get(part, key) is not None:
            raise hub.TranslationError(
                f"{where}.{key}", "comes from a Gemini built-in tool this provider does not offer"
            )
    # Anything else (an empty part, a bare thought signature, metadata) carries nothing to translate.


def _user_turn(
    parts: list[Any], pending: list[tuple[str, str]], where: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A user content as tool messages (its functionResponses) and the user message's parts."""
    tools: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            continue
        response = _get(part, "functionResponse")
        if isinstance(response, dict):
            tools.append(_tool_message(response, pending, f"{where}.parts[{j}].functionResponse"))
        elif isinstance(part.get("text"), str):
            content.append({"type": "text", "text": part["text"]})
        elif _get(part, "inlineData") is not None or _get(part, "fileData") is not None:
            content.append(_media_part(part, f"{where}.parts[{j}]"))
        elif _get(part, "functionCall") is not None:
            raise hub.TranslationError(f"{where}.parts[{j}].functionCall", "belongs in a model turn")
        else:
            _reject_unsupported(part, f"{where}.parts[{j}]")
    return tools, content


def _tool_message(response: dict[str, Any], pending: list[tuple[str, str]], where: str) -> dict[str, Any]:
    name = str(response.get("name") or "")
    if _list(response.get("parts")):
        raise hub.TranslationError(f"{where}.parts", "multimodal function responses cannot be passed on")
    call_id = response.get("id")
    # Claim the preceding turn's call: by its id, else the first unclaimed call of that name.
    match = next(
        (k for k, (_, known) in enumerate(pending) if call_id and hub.split_signature(known)[0] == call_id), None
    )
    if match is None and not call_id:
        match = next((k for k, (known, _) in enumerate(pending) if known == name), None)
    if match is not None:
        call_id = pending.pop(match)[1]
    if not call_id:
        raise hub.TranslationError(where, f"no function call named {name!r} in the preceding model turn")
    return {"role": "tool", "tool_call_id": str(call_id), "content": _function_output(response.get("response"))}


def _tools_to_openai(tools: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(_list(tools)):
        for key, value in _dict(tool).items():
            if key not in ("functionDeclarations", "function_declarations"):
                raise hub.TranslationError(
                    f"tools[{i}].{key}", f"{key} is a Gemini built-in tool, which this provider does not offer"
                )
            for declaration in map(_dict, _list(value)):
                function: dict[str, Any] = {"name": declaration.get("name")}
                if declaration.get("description"):
                    function["description"] = declaration["description"]
                schema = _get(declaration, "parametersJsonSchema")
                if schema is None:
                    schema = declaration.get("parameters")
                if schema is not None:
                    function["parameters"] = schema  # the very same object: never re-modelled
                out.append({"type": "function", "function": function})
    return out


def _tool_choice_to_openai(tool_config: Any) -> Any:
    calling = _dict(_get(_dict(tool_config), "functionCallingConfig"))
    mode = str(calling.get("mode") or "").upper()
    if mode not in TOOL_MODES_TO_OPENAI:
        return None
    names = _list(_get(calling, "allowedFunctionNames"))
    if mode == "ANY" and len(names) == 1:
        return {"type": "function", "function": {"name": names[0]}}
    return TOOL_MODES_TO_OPENAI[mode]


def _effort(thinking: dict[str, Any]) -> str | None:
    level = _get(thinking, "thinkingLevel")
    if isinstance(level, str) and level.lower() in THINKING_LEVELS:
        return THINKING_LEVELS[level.lower()]
    budget = _get(thinking, "thinkingBudget")
    if not isinstance(budget, int | float) or budget == 0:
        return None
    if budget < 0:
        return THINKING_DYNAMIC_EFFORT
    return next((effort for bound, effort in THINKING_BUDGET_EFFORTS if budget < bound), THINKING_BUDGET_TOP_EFFORT)


def _generation_to_openai(config: dict[str, Any], out: dict[str, Any]) -> None:
    for name, target in (
        ("maxOutputTokens", "max_tokens"),
        ("temperature", "temperature"),
        ("topP", "top_p"),
        ("stopSequences", "stop"),
        ("candidateCount", "n"),
        ("seed", "seed"),
        ("presencePenalty", "presence_penalty"),
        ("frequencyPenalty", "frequency_penalty"),
    ):
        value = _get(config, name)
        if value is not None:
            out[target] = value
    mime = _get(config, "responseMimeType")
    if mime == "application/json":
        schema = _get(config, "responseJsonSchema")
        if schema is None:
            schema = _get(config, "responseSchema")
        if schema is None:
            out["response_format"] = {"type": "json_object"}
        else:
            out["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    elif mime not in (None, "", "text/plain"):
        raise hub.TranslationError("generationConfig.responseMimeType", f"{mime} output is not supported here")
    modalities = [str(m).upper() for m in _list(_get(config, "responseModalities"))]
    if any(modality != "TEXT" for modality in modalities):
        raise hub.TranslationError("generationConfig.responseModalities", "only TEXT output is supported here")
    effort = _effort(_dict(_get(config, "thinkingConfig")))
    if effort:
        out["reasoning_effort"] = effort


def request_to_openai(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A Gemini GenerateContentRequest (the model from the URL) as an OpenAI chat request."""
    if _get(body, "cachedContent"):
        raise hub.TranslationError("cachedContent", "a Gemini context cache cannot be used with this provider")
    messages: list[dict[str, Any]] = []
    system = _system_text(_get(body, "systemInstruction"))
    if system:
        messages.append({"role": "system", "content": system})
    pending: list[tuple[str, str]] = []  # the calls of the last model turn not yet answered
    for i, content in enumerate(_list(body.get("contents"))):
        content = _dict(content)
        parts = _list(content.get("parts"))
        if content.get("role") == "model":
            message, pending = _model_turn(parts, i, f"contents[{i}]")
            messages.append(message)
            continue
        tools, user = _user_turn(parts, pending, f"contents[{i}]")
        messages.extend(tools)
        if len(user) == 1 and user[0]["type"] == "text":
            messages.append({"role": "user", "content": user[0]["text"]})
        elif user:
            messages.append({"role": "user", "content": user})
    out: dict[str, Any] = {"model": model, "messages": messages}
    tools = _tools_to_openai(body.get("tools"))
    if tools:
        out["tools"] = tools
        # OpenAI rejects a tool_choice without tools.
        choice = _tool_choice_to_openai(_get(body, "toolConfig"))
        if choice is not None:
            out["tool_choice"] = choice
    _generation_to_openai(_dict(_get(body, "generationConfig")), out)
    return out


# -- request: OpenAI -> Gemini ----------------------------------------------------------------


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(_list(content)):
        part = _dict(part)
        kind = part.get("type")
        here = f"{where}.content[{j}]"
        if kind == "text":
            parts.append({"text": str(part.get("text", ""))})
        elif kind == "image_url":
            image = part.get("image_url")
            url = str(image.get("url", "") if isinstance(image, dict) else image or "")
            data = hub.parse_data_url(url)
            if data:
                parts.append({"inlineData": {"mimeType": data[0], "data": data[1]}})
            elif url.startswith(("http://", "https://")):
                mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
                parts.append({"fileData": {"mimeType": mime, "fileUri": url}})
            else:
                raise hub.TranslationError(here, "an image must be a data URL or an http(s) URL")
        elif kind == "file":
            data = hub.parse_data_url(str(_dict(part.get("file")).get("file_data") or ""))
            if not data:
                raise hub.TranslationError(here, "a file must come as file_data with a data URL")
            parts.append({"inlineData": {"mimeType": data[0], "data": data[1]}})
        elif kind == "input_audio":
            audio = _dict(part.get("input_audio"))
            parts.append(
                {"inlineData": {"mimeType": f"audio/{audio.get('format', 'wav')}", "data": audio.get("data", "")}}
            )
        else:
            raise hub.TranslationError(here, f"content part type {kind!r} is not supported by Gemini")
    return parts


def _model_parts(message: dict[str, Any], where: str, names: dict[str, str]) -> list[dict[str, Any]]:
    # reasoning_content is not sent back: Gemini keeps its reasoning server-side, only signatures matter.
    parts: list[dict[str, Any]] = []
    text = hub.text_of(message.get("content"))
    if text:
        parts.append({"text": text})
    calls = _list(message.get("tool_calls"))
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and not calls:
        calls = [{"id": "", "function": legacy}]
    for k, call in enumerate(calls):
        function = _dict(_dict(call).get("function"))
        call_id = str(call.get("id") or "")
        name = str(function.get("name") or "")
        args = hub.arguments_object(function.get("arguments"), f"{where}.tool_calls[{k}].function.arguments")
        part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
        base, signature = hub.split_signature(call_id)
        if signature:
            part["thoughtSignature"] = signature  # part-level, beside the call, as Gemini wants it
        parts.append(part)
        if call_id:
            names[call_id] = names[base] = name
    return parts


def _response_part(message: dict[str, Any], name: str) -> dict[str, Any]:
    text = hub.text_of(message.get("content"))
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    response = value if isinstance(value, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _tools_from_openai(body: dict[str, Any]) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    functions = [{"type": "function", "function": fn} for fn in _list(body.get("functions"))]
    for i, tool in enumerate(_list(body.get("tools")) + functions):
        tool = _dict(tool)
        if tool.get("type") != "function":
            raise hub.TranslationError(f"tools[{i}]", f"tool type {tool.get('type')!r} is not supported by Gemini")
        function = _dict(tool.get("function"))
        declaration: dict[str, Any] = {"name": function.get("name")}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters"):
            declaration["parametersJsonSchema"] = function["parameters"]  # the very same object
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config_from_openai(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in TOOL_CHOICES_FROM_OPENAI:
        return {"functionCallingConfig": {"mode": TOOL_CHOICES_FROM_OPENAI[choice]}}
    if isinstance(choice, dict):
        name = _dict(choice.get("function")).get("name") or choice.get("name")
        if name:
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    raise hub.TranslationError("tool_choice", "must be auto, required, none or a named function")


def _generation_from_openai(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    stop = body.get("stop")
    for target, value in (
        ("maxOutputTokens", max_tokens),
        ("temperature", body.get("temperature")),
        ("topP", body.get("top_p")),
        ("stopSequences", [stop] if isinstance(stop, str) else stop),
        ("candidateCount", body.get("n")),
        ("seed", body.get("seed")),
        ("presencePenalty", body.get("presence_penalty")),
        ("frequencyPenalty", body.get("frequency_penalty")),
    ):
        if value is not None:
            config[target] = value
    response_format = _dict(body.get("response_format"))
    kind = response_format.get("type")
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        config["responseMimeType"] = "application/json"
        schema = _dict(response_format.get("json_schema")).get("schema")
        if schema is not None:
            config["responseJsonSchema"] = schema
    elif kind not in (None, "text"):
        raise hub.TranslationError("response_format", f"type {kind!r} is not supported by Gemini")
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in EFFORT_BUDGETS:
            raise hub.TranslationError("reasoning_effort", f"{effort!r} is not a known effort")
        budget = EFFORT_BUDGETS[effort]
        config["thinkingConfig"] = (
            {"thinkingBudget": budget, "includeThoughts": True} if budget else {"thinkingBudget": 0}
        )
    return config


def request_from_openai(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat request as a Gemini GenerateContentRequest (model and stream go in the URL)."""
    if body.get("logprobs"):
        raise hub.TranslationError("logprobs", "log probabilities are not offered through this translation")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool-call id -> function name, from the assistant turns so far
    for i, message in enumerate(_list(body.get("messages"))):
        message = _dict(message)
        role = message.get("role")
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            text = hub.text_of(message.get("content"))
            if text:
                system.append({"text": text})
        elif role == "user":
            _append(contents, "user", _user_parts(message.get("content"), where))
        elif role == "assistant":
            _append(contents, "model", _model_parts(message, where, names))
        elif role == "tool":
            call_id = str(message.get("tool_call_id") or "")
            name = names.get(call_id) or names.get(hub.split_signature(call_id)[0])
            if not name:
                raise hub.TranslationError(
                    f"{where}.tool_call_id", "matches no tool call of a preceding assistant turn"
                )
            # Merging puts every result of a parallel call in one user content, as Gemini requires.
            _append(contents, "user", [_response_part(message, name)])
        elif role == "function":
            _append(contents, "user", [_response_part(message, str(message.get("name") or ""))])
        else:
            raise hub.TranslationError(f"{where}.role", f"role {role!r} is not supported by Gemini")
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = _tools_from_openai(body)
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice")
    if choice is None and body.get("function_call") is not None:
        legacy = body["function_call"]
        choice = {"type": "function", "function": legacy} if isinstance(legacy, dict) else legacy
    tool_config = _tool_config_from_openai(choice)
    if tool_config:
        out["toolConfig"] = tool_config
    config = _generation_from_openai(body)
    if config:
        out["generationConfig"] = config
    return out


# -- response: Gemini -> OpenAI ---------------------------------------------------------------


def _choice(candidate: dict[str, Any], position: int, scope: str) -> dict[str, Any]:
    index = candidate.get("index")
    index = index if isinstance(index, int) else position
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in _list(_dict(candidate.get("content")).get("parts")):
        if not isinstance(part, dict):
            continue
        call = _get(part, "functionCall")
        if isinstance(call, dict):
            calls.append(_openai_call(call, f"{scope}:{index}", len(calls), _get(part, "thoughtSignature")))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
        # Any other part (inline media, code execution, metadata) has no place in a chat message.
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    finish = "tool_calls" if calls else _finish_to_openai(candidate.get("finishReason"))
    return {"index": index, "message": message, "finish_reason": finish, "logprobs": None}


def response_to_openai(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """A GenerateContentResponse as an OpenAI ``chat.completion``."""
    response_id = payload.get("responseId") or "chatcmpl-gemini-" + _digest(hub.compact(payload), 24)
    candidates = [c for c in _list(payload.get("candidates")) if isinstance(c, dict)]
    choices = [_choice(candidate, k, str(payload.get("responseId") or "")) for k, candidate in enumerate(candidates)]
    if not choices:
        reason = _dict(payload.get("promptFeedback")).get("blockReason")
        message: dict[str, Any] = {"role": "assistant", "content": None if reason else ""}
        if reason:
            message["refusal"] = _BLOCKED.format(reason)
        finish = "content_filter" if reason else "stop"
        choices = [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}]
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": hub.now(),
        "model": model,
        "choices": choices,
        "usage": _usage_to_openai(payload.get("usageMetadata")),
    }


# -- response: OpenAI -> Gemini ---------------------------------------------------------------


def response_from_openai(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` as a GenerateContentResponse."""
    candidates: list[dict[str, Any]] = []
    for position, choice in enumerate(_list(payload.get("choices"))):
        choice = _dict(choice)
        message = _dict(choice.get("message"))
        parts: list[dict[str, Any]] = []
        if message.get("reasoning_content"):
            parts.append({"text": str(message["reasoning_content"]), "thought": True})
        text = hub.text_of(message.get("content"))
        if text:
            parts.append({"text": text})
        finish = FINISH_FROM_OPENAI.get(str(choice.get("finish_reason")), "STOP")
        if message.get("refusal"):
            parts.append({"text": str(message["refusal"])})
            finish = "SAFETY"
        for call in _list(message.get("tool_calls")):
            function = _dict(_dict(call).get("function"))
            parts.append(
                _gemini_call_part(str(call.get("id") or ""), str(function.get("name") or ""), function.get("arguments"))
            )
        legacy = message.get("function_call")
        if isinstance(legacy, dict):
            parts.append(_gemini_call_part("", str(legacy.get("name") or ""), legacy.get("arguments")))
        index = choice.get("index")
        candidates.append(
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": finish,
                "index": index if isinstance(index, int) else position,
            }
        )
    return {
        "candidates": candidates,
        "usageMetadata": _usage_from_openai(payload.get("usage")),
        "modelVersion": model,
        "responseId": str(payload.get("id") or ""),
    }


# -- streams ----------------------------------------------------------------------------------


class StreamToOpenAI:
    """Gemini SSE events (one GenerateContentResponse each) -> OpenAI ``chat.completion.chunk`` dicts."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.created = hub.now()
        self.id = ""
        self.scope = ""
        self.started: set[int] = set()
        self.calls: dict[int, int] = {}  # candidate index -> function calls seen (the next call's index)
        self.finishes: dict[int, str] = {}  # candidate index -> OpenAI finish reason
        self.usage: Any = None

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out = hub.chunk(self.id, self.model, self.created, delta, finish)
        out["choices"][0]["index"] = index
        return out

    def _begin(self, index: int, out: list[dict[str, Any]]) -> None:
        if index not in self.started:
            self.started.add(index)
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))

    def feed(self, event: str | None, data: dict[str, Any]) -> list[dict[str, Any]]:
        error = data.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise hub.StreamError(
                code if isinstance(code, int) else 502,
                str(error.get("message") or "the upstream reported an error"),
                error.get("status") if isinstance(error.get("status"), str) else None,
            )
        if not self.id:
            self.scope = str(data.get("responseId") or "")
            self.id = self.scope or "chatcmpl-gemini-" + _digest(hub.compact(data), 24)
        out: list[dict[str, Any]] = []
        if data.get("usageMetadata") is not None:
            self.usage = data["usageMetadata"]  # cumulative: the last one counts
        candidates = [c for c in _list(data.get("candidates")) if isinstance(c, dict)]
        if not candidates:
            self._begin(0, out)
            reason = _dict(data.get("promptFeedback")).get("blockReason")
            if reason:
                out.append(self._chunk(0, {"refusal": _BLOCKED.format(reason)}))
                self.finishes[0] = "content_filter"
            return out
        for position, candidate in enumerate(candidates):
            index = candidate.get("index")
            index = index if isinstance(index, int) else position
            self._begin(index, out)
            for part in _list(_dict(candidate.get("content")).get("parts")):
                if isinstance(part, dict):
                    self._part(index, part, out)
            if candidate.get("finishReason"):
                self.finishes[index] = _finish_to_openai(candidate["finishReason"])
        return out

    def _part(self, index: int, part: dict[str, Any], out: list[dict[str, Any]]) -> None:
        call = _get(part, "functionCall")
        if isinstance(call, dict):
            k = self.calls.get(index, 0)
            self.calls[index] = k + 1
            tool_call = _openai_call(call, f"{self.scope}:{index}", k, _get(part, "thoughtSignature"))
            out.append(self._chunk(index, {"tool_calls": [{"index": k, **tool_call}]}))
        elif isinstance(part.get("text"), str) and part["text"]:
            key = "reasoning_content" if part.get("thought") else "content"
            out.append(self._chunk(index, {key: part["text"]}))

    def finish(self) -> list[dict[str, Any]]:
        if not self.finishes:
            raise hub.StreamError(502, _NO_FINISH)
        out = [
            self._chunk(index, {}, "tool_calls" if self.calls.get(index) else reason)
            for index, reason in sorted(self.finishes.items())
        ]
        out.append(hub.usage_chunk(self.id, self.model, self.created, _usage_to_openai(self.usage)))
        return out


class _Call:
    """An OpenAI tool call being assembled from its stream fragments."""

    __slots__ = ("id", "name", "arguments")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments = ""


class _Choice:
    __slots__ = ("calls", "finish", "refused")

    def __init__(self) -> None:
        self.calls: dict[int, _Call] = {}  # calls not yet sent, by their OpenAI index
        self.finish: str | None = None
        self.refused = False


class StreamFromOpenAI:
    """OpenAI ``chat.completion.chunk`` dicts -> Gemini SSE events (``data: <json>`` + CRLF CRLF)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = ""
        self.choices: dict[int, _Choice] = {}
        self.usage: Any = None
        self.done = False

    def _event(self, candidates: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        payload: dict[str, Any] = {"candidates": candidates}
        if usage is not None:
            payload["usageMetadata"] = usage
        payload["modelVersion"] = self.model
        payload["responseId"] = self.id
        return _event(payload)

    @staticmethod
    def _flush(state: _Choice, below: int | None = None) -> list[dict[str, Any]]:
        """The function-call parts of the complete calls: all, or those before index ``below``."""
        ready = sorted(k for k in state.calls if below is None or k < below)
        return [_gemini_call_part(call.id, call.name, call.arguments) for call in map(state.calls.pop, ready)]

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if self.done:
            return b""
        self.id = self.id or str(chunk.get("id") or "")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out = b""
        for position, choice in enumerate(_list(chunk.get("choices"))):
            choice = _dict(choice)
            index = choice.get("index")
            index = index if isinstance(index, int) else position
            state = self.choices.setdefault(index, _Choice())
            delta = _dict(choice.get("delta"))
            parts: list[dict[str, Any]] = []
            if delta.get("reasoning_content"):
                parts.append({"text": str(delta["reasoning_content"]), "thought": True})
            if delta.get("content"):
                parts.append({"text": str(delta["content"])})
            if delta.get("refusal"):
                parts.append({"text": str(delta["refusal"])})
                state.refused = True
            for fragment in _list(delta.get("tool_calls")):
                fragment = _dict(fragment)
                k = fragment.get("index")
                k = k if isinstance(k, int) else 0
                if k not in state.calls:
                    parts.extend(self._flush(state, below=k))  # a later call starting completes the earlier ones
                    state.calls[k] = _Call()
                call = state.calls[k]
                call.id = call.id or str(fragment.get("id") or "")
                function = _dict(fragment.get("function"))
                call.name = call.name or str(function.get("name") or "")
                call.arguments += str(function.get("arguments") or "")
            if choice.get("finish_reason"):
                state.finish = str(choice["finish_reason"])
                parts.extend(self._flush(state))
            if parts:
                out += self._event([{"content": {"role": "model", "parts": parts}, "index": index}])
        return out

    def finish(self) -> bytes:
        if self.done:
            return b""
        self.done = True
        candidates: list[dict[str, Any]] = []
        for index, state in sorted((self.choices or {0: _Choice()}).items()):
            reason = "SAFETY" if state.refused else FINISH_FROM_OPENAI.get(state.finish or "stop", "STOP")
            candidates.append(
                {"content": {"role": "model", "parts": self._flush(state)}, "finishReason": reason, "index": index}
            )
        return self._event(candidates, _usage_from_openai(self.usage) if self.usage else None)

    def error(self, status: int, message: str) -> bytes:
        self.done = True
        return _event(_error_object(status, message))


def error_body(status: int, message: str, type_: str | None = None) -> bytes:
    """A Gemini error answer: ``{"error": {"code", "message", "status"}}``."""
    return hub.compact(_error_object(status, message, type_)).encode()


def model_entry(model_id: str) -> dict[str, Any]:
    """One entry of ``GET /v1beta/models``; an id with a "/" stays whole after "models/"."""
    return {
        "name": f"models/{model_id}",
        "baseModelId": model_id,
        "version": "001",
        "displayName": model_id,
        "supportedGenerationMethods": list(_MODEL_METHODS),
    }


def models_page(ids: list[str]) -> dict[str, Any]:
    return {"models": [model_entry(model_id) for model_id in ids]}


def count_tokens_answer(tokens: int) -> dict[str, Any]:
    return {"totalTokens": tokens}
