"""Property-based fuzzing of the inference proxy: hostile bodies, headers, paths and event streams.

What must hold for every generated request (SPEC sections 5, 6 and 9):

- a request refused before the upstream call is a 4xx in the one error shape, with nothing sent
  upstream and no UsageRecord written;
- a request that reached the upstream writes exactly one UsageRecord per upstream attempt, with
  its status, non-negative tokens and a finite, non-negative cost;
- a 5xx is only the gateway's 502/504 for an upstream fault, or a status the upstream answered;
- the VK value never comes back in an answer;
- an upstream event stream that is cut short, never ends or is garbage reaches the client as the
  events the upstream sent (plus an in-band error event when the stream broke off), never as a
  crash.

Upstream traffic is counted by the mock upstream itself (``/_mock/stats``), so "nothing was sent
upstream" is measured on the far side of the wire.
"""

from __future__ import annotations

import base64
import json
import math
import re
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.mock_upstream import ROUTES as MOCK_ROUTES
from bench.mock_upstream import answer_chat, answer_messages, answer_responses
from governance.models import ModelPrice, UsageRecord
from governance.services import virtual_key_create
from proxy.routing import ROUTES
from tests.proxy.conftest import Answer, make_setup, send

pytestmark = [pytest.mark.django_db, pytest.mark.fuzz]

FUZZ = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
POST_PATHS = sorted(path for path, route in ROUTES.items() if route.method == "POST")
ERROR_KEYS = {"is_bifrost_error", "status_code", "error", "extra_fields", "type"}
MAX_TOKENS_COLUMN = 2**31 - 1  # PositiveIntegerField's bound on every supported database


def upstream_attempts(mock) -> int:
    """Inference requests the mock has received (its own stats endpoints excluded)."""
    by_path = mock.stats()["by_path"]
    return sum(count for path, count in by_path.items() if path in MOCK_ROUTES or "/v1" + path in MOCK_ROUTES)


def upstream_statuses(mock) -> dict[str, int]:
    return mock.stats()["by_status"]


def assert_error_shape(answer: Answer, *, before_upstream: bool) -> dict:
    assert answer.headers["content-type"] == "application/json", answer
    payload = json.loads(answer.body)
    assert set(payload) <= ERROR_KEYS and {"is_bifrost_error", "status_code", "error", "extra_fields"} <= set(payload)
    assert payload["is_bifrost_error"] is False
    assert payload["status_code"] == answer.status
    message = payload["error"]["message"]
    assert isinstance(message, str) and message.strip()
    assert "Traceback" not in message
    if before_upstream:
        assert payload["extra_fields"] == {}
    return payload


def assert_rows_sane(rows) -> None:
    for row in rows:
        assert row.status_code >= 100
        for name in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"):
            assert 0 <= getattr(row, name) <= MAX_TOKENS_COLUMN
        assert row.cost.is_finite() and row.cost >= 0


@pytest.fixture
def world(mock):
    setup = make_setup(mock.url)
    ModelPrice.objects.create(
        provider="openai",
        model="garbage-stream",
        input_cost_per_token=Decimal("0.000001"),
        output_cost_per_token=Decimal("0.000002"),
    )
    return setup


# --- strategies -----------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities included: Python's json reads and writes them
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
huge_text = st.builds(lambda ch, n: ch * n, st.characters(), st.integers(1_000, 300_000))
odd_text = st.one_of(st.text(), huge_text, st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=20))
not_a_model = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
    st.text(alphabet=" \t\r\n\x0b\x0c\u00a0\u2003", max_size=10),  # empty or blank
)
bad_fallbacks = st.one_of(
    st.text(min_size=1), st.integers(), st.dictionaries(st.text(max_size=5), scalars, max_size=2),
    st.lists(st.one_of(st.just(""), st.integers(), st.none(), st.lists(st.text(), max_size=1)), min_size=1, max_size=3)
    .map(lambda items: ["openai/gpt-4o", *items]),
)  # fmt: skip
extra_fields = st.dictionaries(
    st.sampled_from(["messages", "stream", "max_tokens", "max_completion_tokens", "prompt", "input", "temperature"])
    | st.text(max_size=12),
    st.one_of(json_values, odd_text),
    max_size=4,
)


def _object_bytes(pairs: list[tuple[str, object]]) -> bytes:
    """A JSON object written pair by pair, so a key may appear twice (the last one wins in Python)."""
    return ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}").encode()


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"model":' * depth + b"1" + b"}" * depth
    return b'{"model":"openai/gpt-4o","messages":' + b"[" * depth + b"]" * depth + b"}"


rejected_bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    st.builds(lambda extra, model: _object_bytes([*extra.items(), ("model", model)]), extra_fields, not_a_model),
    st.builds(lambda extra: _object_bytes([(k, v) for k, v in extra.items() if k != "model"]), extra_fields),
    st.builds(
        lambda model, fb, extra: _object_bytes([("model", model), *extra.items(), ("fallbacks", fb)]),
        st.sampled_from(["openai/gpt-4o", "gpt-4o", "anthropic/claude-3-5-haiku-latest"]),
        bad_fallbacks,
        extra_fields,
    ),
    # Duplicate keys: a valid model first, then a wrong one that wins.
    st.builds(lambda bad: _object_bytes([("model", "openai/gpt-4o"), ("model", bad)]), not_a_model),
    # Invalid UTF-8 inside an otherwise valid object, and a NUL in the model.
    st.sampled_from([b'{"model": "openai/gpt-4o\xff"}', b'{"model": "\xc3("}', b'{"model":"\x00"}']),
    st.builds(_nested, st.integers(1, 200_000), st.sampled_from(["array", "object", "messages"])).filter(
        lambda raw: not raw.startswith(b'{"model":"openai') or raw.count(b"[") > 5_000
    ),
)


# --- 1. bodies refused before the upstream call ---------------------------------------------------


@FUZZ
@given(path=st.sampled_from(POST_PATHS), raw=rejected_bodies)
@example(path="/v1/chat/completions", raw=b"[" * 100_000 + b"]" * 100_000)  # past the JSON decoder's depth guard
@example(path="/anthropic/v1/messages", raw=b'{"model":"anthropic/x","model":null}')
def test_malformed_bodies_are_400_in_the_error_shape_and_cost_nothing(world, mock, path, raw):
    rows, attempts = UsageRecord.objects.attempts().count(), upstream_attempts(mock)
    answer = send(path, raw, {"x-bf-vk": world.value})
    assert answer.status == 400, answer
    assert_error_shape(answer, before_upstream=True)
    assert world.value.encode() not in answer.body
    assert UsageRecord.objects.attempts().count() == rows
    assert upstream_attempts(mock) == attempts


# --- 2. wrong types around a routable model -------------------------------------------------------

routable = st.fixed_dictionaries(
    {
        "model": st.sampled_from(
            [
                "openai/gpt-4o",
                "gpt-4o-mini",
                "openai/gpt-4o-fail-400",
                "anthropic/claude-3-5-haiku-latest",
                "openai/gpt-4o-fail-429",
                "nowhere/gpt-4o",
            ]
        )
    },
    optional={
        "messages": st.one_of(json_values, odd_text, st.just([{"role": "user", "content": "hi"}])),
        "stream": st.one_of(st.booleans(), scalars),
        # The mock produces max_tokens tokens: unbounded integers stay in the budget test below.
        "max_tokens": st.one_of(st.integers(-(2**31), 40), st.floats(), st.text(max_size=5), st.none(), st.booleans()),
        "max_completion_tokens": st.one_of(st.integers(-5, 40), st.text(max_size=5), st.lists(st.integers())),
        "fallbacks": st.lists(
            st.sampled_from(["openai/gpt-4o", "anthropic/claude-3-5-haiku-latest", "nowhere/x", "openai/x-fail-429"]),
            max_size=3,
        ),
        "stream_options": json_values,
        "n": json_values,
        "\u2603 \x00 key": odd_text,
    },
)


@FUZZ
@given(path=st.sampled_from(POST_PATHS), body=routable)
def test_wrong_types_around_a_routable_model_never_break_the_ledger(world, mock, path, body):
    rows, attempts, statuses = UsageRecord.objects.attempts().count(), upstream_attempts(mock), upstream_statuses(mock)
    answer = send(path, json.dumps(body).encode(), {"x-bf-vk": world.value})
    made = upstream_attempts(mock) - attempts
    new_rows = list(UsageRecord.objects.attempts().order_by("-id")[: UsageRecord.objects.attempts().count() - rows])
    assert world.value.encode() not in answer.body
    if ROUTES[path].request_type == "count_tokens":
        # Counting is free everywhere: asked of the provider or estimated here, never recorded.
        assert not new_rows and made <= 1
        return
    # One ledger row per upstream attempt, none for a refusal.
    assert len(new_rows) == made
    assert_rows_sane(new_rows)
    if answer.status < 400:
        assert made >= 1 and answer.body
        assert any(row.status_code == answer.status for row in new_rows)
        return
    payload = assert_error_shape(answer, before_upstream=made == 0)
    if made == 0:
        assert 400 <= answer.status < 500
    if answer.status >= 500:
        served = {int(k) for k, v in upstream_statuses(mock).items() if v > statuses.get(k, 0)}
        assert answer.status in (502, 504) or answer.status in served, payload


# --- 3. odd and conflicting credentials -----------------------------------------------------------


def _wsgi_text(text: str) -> str:
    """What a WSGI server puts in the environ for a header sent as UTF-8 bytes."""
    return text.encode("utf-8").decode("latin-1")


# Generated header values name the test's key symbolically; ``resolve`` fills in its value, so
# the strategies (and the explicit examples) do not depend on a fixture.
VK, VK_REST, VK_CUT = "\u00abVK\u00bb", "\u00abVK_REST\u00bb", "\u00abVK_CUT\u00bb"


def resolve(headers: dict[str, str], value: str) -> dict[str, str]:
    return {
        name: text.replace(VK_REST, value[6:]).replace(VK_CUT, value[:-1]).replace(VK, value)
        for name, text in headers.items()
    }


@st.composite
def credentials(draw) -> str:
    unknown = "sk-bf-" + str(draw(st.uuids(version=4)))
    base = draw(st.sampled_from([VK, "SK-BF-" + VK_REST, "sK-bF-" + VK_REST, unknown, VK_CUT, VK + "0", ""]))
    return draw(
        st.one_of(
            st.just(base),
            st.sampled_from([" ", "\t", "  "]).map(lambda pad: pad + base + pad),
            st.sampled_from([",", ", "]).map(lambda sep: f"{base}{sep}{unknown}"),  # a repeated header, joined
            st.sampled_from([",", ", "]).map(lambda sep: f"{unknown}{sep}{base}"),
            st.text(max_size=40).map(_wsgi_text),
            st.builds(lambda n: "sk-bf-" + "a" * n, st.integers(100, 100_000)),
            st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=10),
        )
    )


def presented(headers: dict[str, str]) -> str | None:
    """SPEC section 6: ``x-bf-vk`` carries any value; ``Authorization: Bearer``, ``x-api-key`` and
    ``x-goog-api-key`` count only with the ``sk-bf-`` prefix (case-insensitive), in that order."""
    value = headers.get("x-bf-vk", "").strip()
    if value:
        return value
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip()[:6].lower() == "sk-bf-":
        return token.strip()
    for name in ("x-api-key", "x-goog-api-key"):
        value = headers.get(name, "").strip()
        if value[:6].lower() == "sk-bf-":
            return value
    return None


@st.composite
def header_sets(draw) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name in draw(st.sets(st.sampled_from(["x-bf-vk", "authorization", "x-api-key", "x-goog-api-key"]))):
        value = draw(credentials())
        if name == "authorization":
            scheme = draw(st.sampled_from(["Bearer ", "bearer ", "BEARER  ", "Basic ", "Token ", "", "Bearer\t"]))
            value = scheme + value
        headers[name] = value
    return headers


@FUZZ
@given(headers=header_sets())
@example(headers={"authorization": "Bearer SK-BF-" + VK_REST})
@example(headers={"x-api-key": " sK-bF-" + VK_REST + " ", "x-goog-api-key": "sk-bf-nope"})
@example(headers={"x-goog-api-key": VK})
@example(headers={"x-bf-vk": "sk-bf-nope", "authorization": "Bearer " + VK})  # x-bf-vk wins, and is wrong
@example(headers={"x-bf-vk": " \t", "authorization": "Basic " + VK, "x-api-key": VK})
@example(headers={"x-bf-vk": VK + ", " + VK})  # the header repeated: joined, so not the key
@example(headers={"authorization": "Bearer " + VK_CUT})
def test_odd_and_conflicting_vk_headers_authenticate_exactly_the_presented_key(world, mock, headers):
    headers = resolve(headers, world.value)
    rows, attempts = UsageRecord.objects.attempts().count(), upstream_attempts(mock)
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    answer = send("/v1/chat/completions", json.dumps(body).encode(), headers)
    assert world.value.encode() not in answer.body
    expected = presented(headers)
    if expected is not None and expected[:6].lower() == "sk-bf-":
        expected_canonical = "sk-bf-" + expected[6:]  # the prefix is matched case-insensitively
    else:
        expected_canonical = expected
    if expected_canonical == world.value:
        assert answer.status == 200, answer
        assert UsageRecord.objects.attempts().count() == rows + 1
        return
    assert answer.status == 401, answer
    payload = assert_error_shape(answer, before_upstream=True)
    assert payload["type"] == ("virtual_key_required" if expected is None else "virtual_key_not_found")
    assert UsageRecord.objects.attempts().count() == rows
    assert upstream_attempts(mock) == attempts


# --- 4. odd paths, methods and Content-Length -----------------------------------------------------

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "post", "G\u00c9T"]
odd_paths = st.one_of(
    st.sampled_from(sorted(ROUTES)),
    st.builds(
        lambda prefix, rest: prefix + _wsgi_text(rest),
        st.sampled_from(["/v1/", "/openai/", "/anthropic/", "/openai/v1/", "/anthropic/v1/"]),
        st.text(max_size=40),
    ),
    st.sampled_from(sorted(ROUTES)).map(lambda p: p + "/"),
    st.sampled_from(sorted(ROUTES)).map(lambda p: p.upper()),
    st.sampled_from(sorted(ROUTES)).map(lambda p: p.replace("/", "//", 1)),
)


@FUZZ
@given(path=odd_paths, method=st.sampled_from(METHODS) | st.text(min_size=1, max_size=8).map(_wsgi_text))
def test_odd_paths_and_methods_are_404_405_or_401_in_the_error_shape(world, mock, path, method):
    rows, attempts = UsageRecord.objects.attempts().count(), upstream_attempts(mock)
    answer = send(path, b'{"model": "openai/gpt-4o"}', {}, method=method)
    route = ROUTES.get(path)
    if route is None:
        assert answer.status == 404
    elif method != route.method:
        assert answer.status == 405 and answer.headers["allow"] == route.method
    else:
        assert answer.status == 401  # a real route, but no virtual key
    assert_error_shape(answer, before_upstream=True)
    assert UsageRecord.objects.attempts().count() == rows
    assert upstream_attempts(mock) == attempts


@FUZZ
@given(
    path=st.sampled_from(POST_PATHS),
    length=st.one_of(
        st.integers(-(10**12), 10**12).map(str),
        st.sampled_from(["", "abc", " 5 ", "1e3", "0x10", "+7", "\u0661\u0662", "99999999999999999999999"]),
    ),
    raw=st.builds(lambda model: _object_bytes([("model", model)]), not_a_model),
)
def test_any_content_length_is_answered_in_the_error_shape(world, mock, path, length, raw):
    rows, attempts = UsageRecord.objects.attempts().count(), upstream_attempts(mock)
    answer = send(path, raw, {"x-bf-vk": world.value}, content_length=length)
    assert answer.status in (400, 413), answer
    assert_error_shape(answer, before_upstream=True)
    assert UsageRecord.objects.attempts().count() == rows
    assert upstream_attempts(mock) == attempts


# --- 5. budgets and limits with unbounded output caps --------------------------------------------


@pytest.fixture
def governed(world) -> tuple[object, str]:
    """A key with a $1 daily budget and a 2,000-token hourly limit on a priced model."""
    ModelPrice.objects.create(
        provider="openai",
        model="gpt-4o",
        input_cost_per_token=Decimal("0.0000025"),
        output_cost_per_token=Decimal("0.00001"),
    )
    vk, value = virtual_key_create(
        name="governed",
        provider_configs=[{"provider": "openai", "weight": 1.0, "allowed_models": ["*"], "key_ids": ["*"]}],
        budgets=[{"max_limit": 1, "reset_duration": "1d"}],
        rate_limit={"token_max_limit": 2_000, "token_reset_duration": "1h"},
    )
    return vk, value


@FUZZ
@given(
    cap_field=st.sampled_from(["max_tokens", "max_completion_tokens", "max_output_tokens"]),
    cap=st.one_of(st.integers(-(2**80), 2**80), st.floats(), st.text(max_size=5), st.booleans(), json_values),
)
def test_any_output_cap_is_admitted_or_refused_without_overshoot(governed, mock, cap_field, cap):
    """The worst-case cost is reserved from the cap: a huge cap is refused (402), never overflows a
    counter, and the budget is never overshot. Token limits count what was used (Bifrost's rule:
    a request is refused once the window's tokens reached the limit), so they may end above it
    by the last request, never admit one more after that."""
    vk, value = governed
    rows, attempts = UsageRecord.objects.attempts().count(), upstream_attempts(mock)
    tokens_before = sum(UsageRecord.objects.filter(virtual_key_id=vk.id).values_list("total_tokens", flat=True))
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hello"}], cap_field: cap}
    answer = send("/v1/chat/completions", json.dumps(body).encode(), {"x-bf-vk": value})
    made = upstream_attempts(mock) - attempts
    assert UsageRecord.objects.attempts().count() == rows + made
    valid = cap is None or (isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1)
    if not valid:  # a cap of another type would change what is reserved: refused, naming it
        assert answer.status == 400 and made == 0, answer
        assert assert_error_shape(answer, before_upstream=True)["error"]["message"] == (
            f"{cap_field} must be a positive integer"
        )
    elif answer.status == 200:
        assert made == 1
    else:
        assert answer.status in (402, 429), answer
        payload = assert_error_shape(answer, before_upstream=True)
        assert payload["type"] in ("budget_exceeded", "token_limited", "request_limited", "rate_limited")
        assert made == 0
    if tokens_before >= 2_000 and valid:
        assert answer.status == 429 and made == 0
    mine = list(UsageRecord.objects.filter(virtual_key_id=vk.id))
    assert_rows_sane(mine)
    assert sum(r.cost for r in mine) <= 1


# --- 6. truncated and garbage event streams -------------------------------------------------------

USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
STREAM_ROUTES = {
    "/v1/chat/completions": "openai/garbage-stream",
    "/v1/completions": "openai/garbage-stream",
    "/openai/v1/responses": "garbage-stream",
    "/anthropic/v1/messages": "garbage-stream",
}
wild_number = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.sampled_from(["12", "-3", "1e999", "-1e999", "NaN", "nan", "Infinity", "0.5", "abc", ""]),
    st.none(),
    st.booleans(),
)


def _real_events(path: str, completion: int) -> list[bytes]:
    """A well-formed stream as the mock would send it for ``path``."""
    body = {"stream": True, "max_tokens": completion, "stream_options": {"include_usage": True}}
    body["messages"] = [{"role": "user", "content": "hello there"}]
    if path == "/anthropic/v1/messages":
        return answer_messages(body, "garbage-stream").events
    if path == "/openai/v1/responses":
        return answer_responses(body, "garbage-stream").events
    return answer_chat(None, body, "garbage-stream", legacy=path == "/v1/completions").events


@st.composite
def wild_usage_event(draw) -> bytes:
    usage = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "prompt_tokens",
                    "completion_tokens",
                    "total_tokens",
                    "input_tokens",
                    "output_tokens",
                    "cache_read_input_tokens",
                    "cost",
                ]
            ),
            wild_number,
            min_size=1,
        )
        | st.builds(lambda d: {"prompt_tokens_details": d}, st.dictionaries(st.just("cached_tokens"), wild_number))
    )
    shape = draw(st.sampled_from(["chat", "message_start", "message_delta", "response.completed"]))
    if shape == "chat":
        payload: dict = {"choices": [], "usage": usage}
    elif shape == "message_start":
        payload = {"type": "message_start", "message": {"usage": usage}}
    elif shape == "message_delta":
        payload = {"type": "message_delta", "usage": usage}
    else:
        payload = {"type": "response.completed", "response": {"usage": usage}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


garbage_event = st.one_of(
    wild_usage_event(),
    st.binary(max_size=60),
    st.binary(max_size=60).map(lambda b: b"data: " + b + b"\n\n"),
    st.sampled_from(
        [
            b"data: [DONE]\n\n",
            b": keep-alive\n\n",
            b"event: ping\r\ndata: {}\r\n\r\n",
            b'data: {"usage": {\n\n',
            b'data: {"choices": [{"delta": {"content": "x"}}], "usage": null}\n\n',
            b"\n\n\n\n",
            b"data:" + b"x" * 70_000 + b"\n\n",
        ]
    ),
)


@st.composite
def upstream_streams(draw, path: str) -> list[bytes]:
    """A stream cut at any byte, without its usage reports or with garbage spliced in anywhere
    (often last, where a wild usage report is the one that counts), sent in arbitrary chunks."""
    events = _real_events(path, draw(st.integers(1, 6)))
    if draw(st.booleans()):
        events = [event for event in events if not USAGE_OBJECT.search(event)]
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.one_of(st.integers(0, len(events)), st.just(max(0, len(events) - 1))))
        events.insert(where, draw(garbage_event))
    raw = b"".join(events)
    raw = raw[: draw(st.integers(0, len(raw)))] if draw(st.booleans()) else raw
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(raw) - 1)), max_size=8)))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True) if raw[a:b]]


def sse_events(data: bytes) -> list[bytes]:
    return [event for event in data.split(b"\n\n") if event]


def is_subsequence(small: list[bytes], big: list[bytes]) -> bool:
    remaining = iter(big)
    return all(any(item == other for other in remaining) for item in small)


@FUZZ
@given(data=st.data(), path=st.sampled_from(sorted(STREAM_ROUTES)), abort=st.booleans(), governed=st.booleans())
def test_truncated_or_garbage_streams_are_relayed_and_charged_sanely(world, mock, data, path, abort, governed):
    chunks = data.draw(upstream_streams(path))
    include_usage = data.draw(st.booleans())
    body = {
        "model": STREAM_ROUTES[path],
        "stream": True,
        "messages": [{"role": "user", "content": "hello there"}],
        "mock_chunks": [base64.b64encode(c).decode() for c in chunks],
        "mock_abort": abort,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    value = world.value
    if governed:
        _, value = virtual_key_create(
            name=f"streamer-{UsageRecord.objects.attempts().count()}-{len(chunks)}",
            provider_configs=[
                {"provider": p, "weight": 1.0, "allowed_models": ["*"], "key_ids": ["*"]}
                for p in ("openai", "anthropic")
            ],
            budgets=[{"max_limit": 10**6, "reset_duration": "1d"}],
            rate_limit={"token_max_limit": 10**12, "token_reset_duration": "1h"},
        )
    rows = UsageRecord.objects.attempts().count()
    answer = send(path, json.dumps(body).encode(), {"x-bf-vk": value})

    assert answer.status == 200, answer
    assert answer.headers["content-type"] == "text/event-stream"
    sent = [c.replace(b"\r\n", b"\n") for c in chunks]  # the relay normalises CRLF within a chunk
    upstream_events = sse_events(b"".join(sent))
    relayed = sse_events(answer.body)
    if abort:
        assert relayed and b"broke off the stream" in relayed[-1]
        relayed = relayed[:-1]
        assert relayed == upstream_events[: len(relayed)] or is_subsequence(relayed, upstream_events)
    elif path in ("/v1/chat/completions", "/v1/completions") and not include_usage:
        # Only the usage chunk the gateway asked for on the client's behalf may be held back.
        assert is_subsequence(relayed, upstream_events)
        assert all(b'"usage"' in event for event in upstream_events if event not in relayed)
    else:
        assert relayed == upstream_events

    new_rows = list(UsageRecord.objects.attempts().order_by("-id")[: UsageRecord.objects.attempts().count() - rows])
    assert len(new_rows) == 1
    assert_rows_sane(new_rows)
    row = new_rows[0]
    assert row.streamed is True
    assert row.status_code == (502 if abort else 200)
    assert math.isfinite(float(row.cost))
    if not abort and not any(USAGE_OBJECT.search(event) for event in upstream_events):
        # Ended without any usage report: what was produced is estimated, never free. (A stream
        # the upstream broke off is a failed attempt, which costs nothing: proxy.accounting.)
        assert row.prompt_tokens >= 1 and row.total_tokens >= 1
