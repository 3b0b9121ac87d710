"""The Anthropic mapping tables and constants (the decisions are in the package docstring)."""

from __future__ import annotations

from typing import Any

DEFAULT_MAX_TOKENS = 4096
# Anthropic's sampling temperature range is 0..1, OpenAI's 0..2.
MAX_TEMPERATURE = 1.0
# The forced tool that carries a JSON-mode answer (a reserved tool name, see the package docstring).
JSON_TOOL = "json_response"
JSON_TOOL_DESCRIPTION = "Respond with the JSON result"

STOP_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
FINISH_TO_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Error type by HTTP status; other 5xx are api_error, other 4xx invalid_request_error.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
# HTTP status of an in-band stream error by its type (Anthropic's ``error`` event has no status).
ERROR_STATUSES: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# OpenAI reasoning_effort -> Anthropic thinking budget_tokens.
EFFORT_BUDGETS: dict[str, int] = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
# Anthropic budget_tokens -> reasoning_effort: the first effort whose bound the budget is below, else "high".
BUDGET_EFFORTS: dict[str, int] = {"low": 4096, "medium": 16384}
TOOL_CHOICE_TO_OPENAI: dict[str, str] = {"auto": "auto", "any": "required", "none": "none"}
TOOL_CHOICE_FROM_OPENAI: dict[str, str] = {"auto": "auto", "required": "any", "none": "none"}
THINKING_TYPES = ("thinking", "redacted_thinking")

Body = dict[str, Any]
