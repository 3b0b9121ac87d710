"""The Gemini mapping tables and constants (the decisions are in the package docstring)."""

from __future__ import annotations

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
