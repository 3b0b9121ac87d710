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

The package: ``tables`` holds the mapping tables and constants, ``fields`` the reading of the
wire's camelCase / snake_case fields, ``calls`` function calls both ways with the ids of calls
that came without one, ``requests`` the two request translations, ``answers`` the answers (with
the usage, finish-reason and error mapping the streams share), ``streams`` the two stream state
machines.
"""

from __future__ import annotations

from proxy.translate.gemini.answers import (
    count_tokens_answer,
    error_body,
    model_entry,
    models_page,
    response_from_openai,
    response_to_openai,
)
from proxy.translate.gemini.requests import (
    request_from_openai,
    request_to_openai,
)
from proxy.translate.gemini.streams import (
    StreamFromOpenAI,
    StreamToOpenAI,
)
from proxy.translate.gemini.tables import (
    AUDIO_FORMATS,
    EFFORT_BUDGETS,
    ERROR_STATUSES,
    FINISH_FROM_OPENAI,
    FINISH_TO_OPENAI,
    THINKING_BUDGET_EFFORTS,
    THINKING_BUDGET_TOP_EFFORT,
    THINKING_DYNAMIC_EFFORT,
    THINKING_LEVELS,
    TOOL_CHOICES_FROM_OPENAI,
    TOOL_MODES_TO_OPENAI,
)

__all__ = [
    "request_from_openai",
    "request_to_openai",
    "count_tokens_answer",
    "error_body",
    "model_entry",
    "models_page",
    "response_from_openai",
    "response_to_openai",
    "StreamFromOpenAI",
    "StreamToOpenAI",
    "AUDIO_FORMATS",
    "EFFORT_BUDGETS",
    "ERROR_STATUSES",
    "FINISH_FROM_OPENAI",
    "FINISH_TO_OPENAI",
    "THINKING_BUDGET_EFFORTS",
    "THINKING_BUDGET_TOP_EFFORT",
    "THINKING_DYNAMIC_EFFORT",
    "THINKING_LEVELS",
    "TOOL_CHOICES_FROM_OPENAI",
    "TOOL_MODES_TO_OPENAI",
]
