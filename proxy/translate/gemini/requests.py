"""Requests: Gemini ``generateContent`` -> OpenAI chat (``request_to_openai``) and back (``request_from_openai``)."""

from __future__ import annotations

import json
import mimetypes
from typing import Any

from proxy.translate import hub
from proxy.translate.gemini.calls import _openai_call
from proxy.translate.gemini.fields import _dict, _get, _list
from proxy.translate.gemini.tables import (
    _GEMINI_FILES_HOST,
    _UNSUPPORTED_PARTS,
    AUDIO_FORMATS,
    EFFORT_BUDGETS,
    THINKING_BUDGET_EFFORTS,
    THINKING_BUDGET_TOP_EFFORT,
    THINKING_DYNAMIC_EFFORT,
    THINKING_LEVELS,
    TOOL_CHOICES_FROM_OPENAI,
    TOOL_MODES_TO_OPENAI,
)

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
