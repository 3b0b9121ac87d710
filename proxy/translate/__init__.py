"""Format translation between the client's API and the upstream's: OpenAI Chat Completions is the hub.

A request in a client format (Anthropic Messages, Gemini ``generateContent``) becomes an OpenAI
chat request, and that becomes the upstream's format; answers and event streams go back the same
way. When the client and the upstream speak the same format nothing here runs (passthrough).

Every non-hub format is one package (``anthropic/``, ``gemini/``: its mapping tables as data in
``tables.py``, then ``requests.py``, ``answers.py``, ``streams.py``) exposing the same members,
pure functions over dicts plus two small stream state machines (the hub itself, ``openai.py``,
has them too, as pass-throughs):

- ``request_to_openai(body, model)`` the client's request as an OpenAI chat request;
- ``request_from_openai(body, model)`` an OpenAI chat request in this format (for an upstream);
- ``response_to_openai(payload, model)`` an upstream answer as an OpenAI ``chat.completion``;
- ``response_from_openai(payload, model)`` an OpenAI ``chat.completion`` in this format (for a client);
- ``StreamToOpenAI(model)``: ``feed(event, data)`` takes one upstream SSE event (its ``event:``
  name or None, and its decoded JSON) and returns OpenAI ``chat.completion.chunk`` dicts;
  ``finish()`` returns what is still owed once the upstream stream has ended;
- ``StreamFromOpenAI(model)``: ``feed(chunk)`` takes one OpenAI chunk dict and returns this
  format's SSE bytes; ``finish()`` the closing events; ``error(status, message)`` an in-band error
  event for a stream that broke off (after which nothing more is sent);
- ``error_body(status, message, type_)`` an error answer in this format.

No library does this well enough to depend on (see the README): the ones that wrap SDKs make
their own HTTP calls or pin conflicting SDKs, and the one dict-level converter is pre-1.0, slow
and groups parallel tool results wrongly.

Hub conventions the format modules share (``proxy.translate.hub`` has the helpers):

- usage: ``prompt_tokens`` includes cached reads and cache writes, ``completion_tokens``
  includes reasoning; ``prompt_tokens_details.cached_tokens`` and
  ``completion_tokens_details.reasoning_tokens`` carry the parts, each counted once.
- reasoning: an assistant message's ``reasoning_content`` (text) and ``thinking_blocks`` (the
  provider's blocks with their signatures, carried back verbatim on the next turn); in a stream,
  ``delta.reasoning_content`` and ``delta.thinking_blocks``.
- tool-call ids: kept when the target accepts them, otherwise mapped by ``hub.tool_id`` (a digest
  of the original, so the same id maps the same way on every turn). A Gemini thought signature
  rides in the id after ``hub.SIGNATURE_SEPARATOR``.
- finish reasons: ``stop``, ``length``, ``tool_calls``, ``content_filter``; an unknown one is ``stop``.
- a request that cannot be expressed in the target format raises :class:`hub.TranslationError`
  naming the field (answered 400).
"""
