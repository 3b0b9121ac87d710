"""Anthropic Messages <-> OpenAI Chat Completions (the hub): requests, answers, event streams, errors.

Anthropic clients reach OpenAI-format upstreams through ``request_to_openai``, ``response_from_openai``
and ``StreamFromOpenAI``; OpenAI-format requests reach Anthropic upstreams through
``request_from_openai``, ``response_to_openai`` and ``StreamToOpenAI``. Pure functions over dicts:
no Django, no I/O, payloads are read, never deep-copied (schemas, thinking blocks and tool inputs
are passed on as the same objects).

Decisions where the formats differ:

- Tool-call ids: Anthropic's pattern is ``^[a-zA-Z0-9_-]+$``; OpenAI ids that break it are mapped by
  ``hub.tool_id``, on the assistant's calls and on the tool results alike, so both ends agree.
- Consecutive messages of one role are merged (Anthropic requires alternation); OpenAI's
  consecutive ``tool`` messages become ``tool_result`` blocks of ONE user message, ahead of any user
  text that joins it (Anthropic wants tool results first). Empty text is left out (Anthropic
  rejects empty text blocks), system blocks and tool-result text blocks are joined with a newline,
  assistant text blocks with nothing (citations split a sentence into blocks).
- JSON mode (``response_format``) becomes a forced tool named ``JSON_TOOL`` whose input is the
  answer; the way back turns any ``tool_use`` of that name into message content with finish
  reason ``stop``. The name is therefore reserved: a client tool of that name is refused. Anthropic
  cannot force a tool while thinking, so JSON mode with reasoning is refused too.
- ``max_tokens`` is required by Anthropic: ``DEFAULT_MAX_TOKENS`` when the request has none. A
  thinking budget must stay below it: when it does not, ``max_tokens`` becomes budget +
  max_tokens (the client's figure stays the room for the answer itself).
- ``temperature`` is clamped to ``MAX_TEMPERATURE`` (OpenAI allows 2); thinking drops
  ``temperature`` and ``top_p``, which Anthropic rejects alongside it. Penalties, seed,
  logit_bias and ``top_k`` have no counterpart and are dropped; ``n`` > 1, logprobs, audio,
  built-in (server) tools and remote documents raise ``hub.TranslationError`` naming the field.
- Unsigned reasoning (``reasoning_content`` without ``thinking_blocks``) cannot be sent back to
  Anthropic, which verifies signatures: a request leaves it out; an answer to an Anthropic client
  carries it as a thinking block with an empty signature.
- Also read: OpenAI's legacy ``functions``, ``function_call`` and ``function`` messages (the
  function name stands in for the missing call id), Anthropic's ``output_config.format`` beside the
  beta ``output_format``. ``tool_choice`` and the parallel-call switch are left out when no tools
  go with them (both APIs reject that).
- Streams to Anthropic clients keep Anthropic's block lifecycle (one start and one stop per block,
  dense indices, never interleaved). Tool-call fragments stream straight into their block while
  one call's deltas are contiguous; another call's fragments close the open call only once its
  arguments parse as complete JSON. If they do not, the upstream interleaves parallel calls: the
  open call keeps streaming and every other call is buffered and sent whole (start, one
  ``input_json_delta``, stop) when the stream finishes. A fragment for a call already closed (only
  whitespace can validly follow a complete JSON object, or the upstream interleaved text into an
  unfinished call) is dropped rather than reopening a block.

The package: ``tables`` holds the mapping tables and constants, ``requests`` the two request
translations, ``answers`` the answers (with the usage, stop-reason and error mapping the streams
share), ``streams`` the two stream state machines.
"""

from __future__ import annotations

from proxy.translate.anthropic.answers import (
    count_tokens_answer,
    error_body,
    models_page,
    response_from_openai,
    response_to_openai,
)
from proxy.translate.anthropic.requests import (
    request_from_openai,
    request_to_openai,
)
from proxy.translate.anthropic.streams import (
    StreamFromOpenAI,
    StreamToOpenAI,
)
from proxy.translate.anthropic.tables import (
    BUDGET_EFFORTS,
    DEFAULT_MAX_TOKENS,
    EFFORT_BUDGETS,
    ERROR_STATUSES,
    ERROR_TYPES,
    FINISH_TO_STOP,
    JSON_TOOL,
    JSON_TOOL_DESCRIPTION,
    MAX_TEMPERATURE,
    STOP_TO_FINISH,
    THINKING_TYPES,
    TOOL_CHOICE_FROM_OPENAI,
    TOOL_CHOICE_TO_OPENAI,
    Body,
)

__all__ = [
    "request_from_openai",
    "request_to_openai",
    "count_tokens_answer",
    "error_body",
    "models_page",
    "response_from_openai",
    "response_to_openai",
    "StreamFromOpenAI",
    "StreamToOpenAI",
    "DEFAULT_MAX_TOKENS",
    "MAX_TEMPERATURE",
    "JSON_TOOL",
    "JSON_TOOL_DESCRIPTION",
    "STOP_TO_FINISH",
    "FINISH_TO_STOP",
    "ERROR_TYPES",
    "ERROR_STATUSES",
    "EFFORT_BUDGETS",
    "BUDGET_EFFORTS",
    "TOOL_CHOICE_TO_OPENAI",
    "TOOL_CHOICE_FROM_OPENAI",
    "THINKING_TYPES",
    "Body",
]
