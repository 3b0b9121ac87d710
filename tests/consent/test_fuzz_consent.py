"""Property-based fuzzing of the consent flow (SPEC section 8): random form posts, query strings,
cookies and token requests.

Each property keeps a model of what the flow must look like and compares the database with it
after every request:

- the form POSTs answer a usable flow with a 302 to our own pages (or, for a finished or denied
  consent, to the client's registered redirect URI) and anything else with 400/403/409 JSON
  ("Deny access": the same statuses as a page); CSRF failures are 403; a refused input changes
  no flow, session or code, and a denied flow takes nothing more;
- ``authorize`` opens exactly one flow for a valid request and answers every other one 400 with
  the first message that applies;
- the identity and apps pages answer any query string with the page, a redirect to the identity
  page, or a 400/403 error page, the ``error`` text always HTML-escaped;
- the token endpoint answers RFC 6749 JSON; a code is spent only when it was presented with a
  known client, and a token is issued only for the exact client, redirect URI and PKCE verifier.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.core.cache import caches
from django.test import Client, override_settings
from django.utils.html import escape
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consent import services
from consent.exceptions import (
    MSG_CHOOSE_IDENTITY,
    MSG_CLIENT_AND_REDIRECT_REQUIRED,
    MSG_FLOW_DENIED,
    MSG_FLOW_FOREIGN,
    MSG_FLOW_ID_REQUIRED,
    MSG_FLOW_INVALID,
    MSG_FLOW_SUBMITTED,
    MSG_PKCE_CHALLENGE_FORMAT,
    MSG_PKCE_REQUIRED,
    MSG_REDIRECT_NOT_REGISTERED,
    MSG_RESPONSE_TYPE,
    MSG_SKIP_NOT_ALLOWED,
    MSG_STATE_CHARACTERS,
    MSG_STATE_TOO_LONG,
    MSG_UNKNOWN_CLIENT,
    MSG_USER_ID_CHARACTERS,
    MSG_USER_ID_EMPTY,
    MSG_USER_ID_TOO_LONG,
    MSG_VK_EMPTY,
    MSG_VK_INVALID,
)
from consent.http import COOKIE_PREFIX
from consent.models import AuthorizationCode, ConsentFlow, ConsentSession, Identity
from consent.oauth import s256_challenge
from tests.consent.conftest import REDIRECT_URI, browser, csrf_token, start_flow

pytestmark = [pytest.mark.django_db, pytest.mark.fuzz]

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
PRIVATE_URI = "cursor://anysphere.cursor-mcp/oauth"
PATHS = {
    "vk": "/api/oauth/per-user/consent/vk",
    "user-id": "/api/oauth/per-user/consent/user-id",
    "skip": "/api/oauth/per-user/consent/skip",
    "submit": "/api/oauth/per-user/consent/submit",
    "deny": "/oauth/consent/deny",
}
ERROR_KEYS = {"is_bifrost_error", "status_code", "error", "extra_fields"}
FORM_FIELDS = {"flow_id", "vk", "user_id", "csrfmiddlewaretoken"}

odd_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=5),
    st.builds(lambda ch, n: ch * n, st.characters(blacklist_categories=["Cs"]), st.integers(200, 20_000)),
    st.sampled_from(["<script>alert(1)</script>", "' OR 1=1 --", "../../etc/passwd", "%00", "\x00", "\u202e\u2603"]),
)


def assert_json_error(response, status: int, message: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    payload = json.loads(response.content)
    assert set(payload) == ERROR_KEYS and payload["status_code"] == status and payload["is_bifrost_error"] is False
    if message is not None:
        assert payload["error"]["message"] == message


def assert_refused(response, kind: str, status: int, message: str | None = None) -> None:
    """The JSON error of the identity and submit POSTs; "Deny access" answers with a page."""
    if kind != "deny":
        assert_json_error(response, status, message)
        return
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("text/html")
    if message is not None:
        assert escape(message) in response.content.decode()


def query_of(location: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(location).query, keep_blank_values=True)


# --- 1. random actions on one flow: identity POSTs and Finish Setup --------------------------------


@dataclass
class Model:
    """What the flow row must hold."""

    identity: str = Identity.NONE
    user_id: str = ""
    virtual_key_id: object = None
    submitted: bool = False
    denied: bool = False


@st.composite
def actions(draw) -> dict:
    kind = draw(st.sampled_from(sorted(PATHS)))
    action = {
        "kind": kind,
        # Mostly a usable flow, so the identity rules are reached; every kind of unusable one too.
        "flow_id": draw(
            st.sampled_from(["own"] * 12 + ["padded", "missing", "empty", "other", "random", "own+junk", "nul"])
        ),
        "csrf": draw(st.sampled_from(["ok"] * 14 + ["missing", "tampered"])),
        "cookie": draw(st.sampled_from(["ok"] * 14 + ["missing", "tampered", "huge"])),
        "extra": draw(
            st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k not in FORM_FIELDS), odd_text)
        ),
    }
    if kind == "vk":
        action["vk"] = draw(st.one_of(st.sampled_from(["real", "real-padded", "missing"]), odd_text))
    elif kind == "user-id":
        # Around the 255-character limit (with padding that is trimmed first) as often as not.
        near_limit = st.builds(lambda n, pad: pad + "u" * n + pad, st.integers(254, 257), st.sampled_from(["", " "]))
        action["user_id"] = draw(st.one_of(st.just("missing"), odd_text, st.text(max_size=12), near_limit, near_limit))
    return action


def _flow_id_field(variant: str, own: str, other: str) -> str | None:
    return {
        "own": own,
        "padded": f"  {own}\t",
        "missing": None,
        "empty": "",
        "other": other,
        "random": secrets.token_urlsafe(24),
        "own+junk": own + "x",
        "nul": own + "\x00",
    }[variant]


def _expected_identity_outcome(action: dict, model: Model, vk, enforce: bool) -> tuple[str, str | None]:
    """("mcps", None) when the identity is accepted, else ("back", message)."""
    if action["kind"] == "vk":
        raw = {"real": vk.value, "real-padded": f" \t{vk.value}  ", "missing": ""}.get(action["vk"], action["vk"])
        value = raw.strip()
        if not value:
            return "back", MSG_VK_EMPTY
        return ("mcps", None) if value == vk.value else ("back", MSG_VK_INVALID)
    if action["kind"] == "user-id":
        value = ("" if action["user_id"] == "missing" else action["user_id"]).strip()
        if not value:
            return "back", MSG_USER_ID_EMPTY
        if len(value) > 255:
            return "back", MSG_USER_ID_TOO_LONG
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            return "back", MSG_USER_ID_CHARACTERS
        return "mcps", None
    if action["kind"] == "skip":
        return ("back", MSG_SKIP_NOT_ALLOWED) if enforce else ("mcps", None)
    if action["kind"] == "deny":
        return "denied", None
    # submit
    if model.identity == Identity.NONE:
        return "back", MSG_CHOOSE_IDENTITY
    if model.identity == Identity.ANONYMOUS and enforce:
        return "back", MSG_SKIP_NOT_ALLOWED
    return "client", None


def _apply(action: dict, model: Model, vk) -> None:
    if action["kind"] == "vk":
        model.identity, model.user_id, model.virtual_key_id = Identity.VIRTUAL_KEY, "", vk.pk
    elif action["kind"] == "user-id":
        model.identity, model.user_id, model.virtual_key_id = Identity.USER_ID, action["user_id"].strip(), None
    elif action["kind"] == "skip":
        model.identity, model.user_id, model.virtual_key_id = Identity.ANONYMOUS, "", None
    elif action["kind"] == "deny":
        model.denied = True
    else:
        model.submitted = True


def _post(client: Client, own: str, other: str, token: str, action: dict, vk_value: str):
    data = dict(action["extra"])
    flow_id = _flow_id_field(action["flow_id"], own, other)
    if flow_id is not None:
        data["flow_id"] = flow_id
    if action["csrf"] == "ok":
        data["csrfmiddlewaretoken"] = token
    elif action["csrf"] == "tampered":
        data["csrfmiddlewaretoken"] = token[::-1] if token[::-1] != token else token[1:] + "A"
    if action["kind"] == "vk" and action["vk"] != "missing":
        data["vk"] = {"real": vk_value, "real-padded": f" \t{vk_value}  "}.get(action["vk"], action["vk"])
    if action["kind"] == "user-id" and action["user_id"] != "missing":
        data["user_id"] = action["user_id"]
    name = COOKIE_PREFIX + own
    saved = client.cookies[name].value
    if action["cookie"] == "missing":
        del client.cookies[name]
    elif action["cookie"] == "tampered":
        client.cookies[name] = saved[:-2] + ("AA" if not saved.endswith("AA") else "BB")
    elif action["cookie"] == "huge":
        client.cookies[name] = "A" * 3000
    try:
        return client.post(PATHS[action["kind"]], data)
    finally:
        client.cookies[name] = saved


def flow_row(flow_id: str) -> Model:
    row = ConsentFlow.objects.get(flow_id=flow_id)
    return Model(row.identity, row.user_id, row.virtual_key_id, row.status == "submitted", row.status == "denied")


def _step(kind: str, **fields: object) -> dict:
    return {"kind": kind, "flow_id": "own", "csrf": "ok", "cookie": "ok", "extra": {}, **fields}


@FUZZ
@given(steps=st.lists(actions(), min_size=1, max_size=7), enforce=st.booleans())
# The boundaries, always tried whatever the random search finds.
@example(steps=[_step("user-id", user_id="u" * 256), _step("user-id", user_id=" " + "u" * 255 + " ")], enforce=True)
@example(steps=[_step("vk", vk="real-padded"), _step("submit"), _step("submit"), _step("vk", vk="real")], enforce=True)
@example(steps=[_step("skip"), _step("submit"), _step("user-id", user_id="late")], enforce=False)
@example(steps=[_step("skip"), _step("submit", flow_id="padded"), _step("vk", vk="\x00")], enforce=True)
@example(steps=[_step("vk", vk="real"), _step("deny"), _step("deny"), _step("submit"), _step("skip")], enforce=False)
def test_random_consent_posts_answer_as_documented_and_change_only_what_they_accept(
    oauth_client, pkce, vk, steps, enforce
):
    caches["default"].clear()  # rate-limit counters: each example is a fresh visitor
    client, other = browser(), browser()
    own = start_flow(client, oauth_client, pkce)
    other_id = start_flow(other, oauth_client, pkce)
    token = csrf_token(client, own)
    model = Model()
    with override_settings(GOVERNANCE_ENFORCE_VIRTUAL_KEYS=enforce):
        for action in steps:
            counts = (ConsentSession.objects.count(), AuthorizationCode.objects.count())
            response = _post(client, own, other_id, token, action, vk.value)
            assert response.status_code < 500
            variant, kind = action["flow_id"], action["kind"]
            names_own = variant in ("own", "padded")
            if action["csrf"] != "ok":
                assert_refused(response, kind, 403)
            elif variant in ("missing", "empty"):
                assert_refused(response, kind, 400, MSG_FLOW_ID_REQUIRED)
            elif variant in ("random", "own+junk", "nul"):
                assert_refused(response, kind, 400, MSG_FLOW_INVALID)
            elif variant == "other" or (names_own and action["cookie"] != "ok"):
                assert_refused(response, kind, 403, MSG_FLOW_FOREIGN)
            elif model.submitted:
                assert_refused(response, kind, 409, MSG_FLOW_SUBMITTED)
            elif model.denied:
                assert_refused(response, kind, 400, MSG_FLOW_DENIED)
            else:
                outcome, message = _expected_identity_outcome(action, model, vk, enforce)
                assert response.status_code == 302, (action, response.content[:300])
                location = response["Location"]
                if outcome == "client":
                    assert location.startswith(REDIRECT_URI + "?")
                    params = query_of(location)
                    assert params["state"] == ["xyz-state"] and len(params["code"]) == 1
                    assert (ConsentSession.objects.count(), AuthorizationCode.objects.count()) == (
                        counts[0] + 1,
                        counts[1] + 1,
                    )
                    _apply(action, model, vk)
                elif outcome == "denied":
                    assert location.startswith(REDIRECT_URI + "?")
                    params = query_of(location)
                    assert params["error"] == ["access_denied"] and params["state"] == ["xyz-state"]
                    assert "code" not in params
                    _apply(action, model, vk)
                else:
                    parts = urlsplit(location)
                    assert not parts.scheme and not parts.netloc  # our own origin
                    if outcome == "mcps":
                        assert parts.path == "/oauth/consent/mcps" and query_of(location) == {"flow_id": [own]}
                        _apply(action, model, vk)
                    else:
                        assert parts.path == "/oauth/consent"
                        assert query_of(location) == {"flow_id": [own], "error": [message]}
            assert flow_row(own) == model, action
            assert flow_row(other_id) == Model()
            if not (model.submitted and response.status_code == 302 and action["kind"] == "submit"):
                assert (ConsentSession.objects.count(), AuthorizationCode.objects.count()) == counts


# --- 2. authorize with random query strings --------------------------------------------------------

VALID_CHALLENGE = s256_challenge("v" * 50)


@st.composite
def authorize_queries(draw, client_id: str) -> list[tuple[str, str]]:
    """A valid request with up to three parameters missing, repeated or replaced by odd values."""
    valid = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": draw(st.sampled_from([REDIRECT_URI, PRIVATE_URI])),
        "code_challenge": VALID_CHALLENGE,
        "code_challenge_method": "S256",
        "state": draw(
            st.one_of(
                st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
                st.just("a" * 1024),
            )
        ),
    }
    bad = {
        "response_type": st.sampled_from(["token", "", "CODE", " code", "code "]),
        "client_id": st.sampled_from(["", client_id + "x", client_id[:-1], "bfc_nope", client_id + "\x00"]),
        "redirect_uri": st.sampled_from(
            [REDIRECT_URI + "/", REDIRECT_URI.upper(), "javascript:alert(1)", "", "https://evil.example/cb"]
        ),
        "code_challenge": st.sampled_from(
            ["", VALID_CHALLENGE + "A", VALID_CHALLENGE[:-1] + "=", VALID_CHALLENGE[:-1] + "\u00e9", "x" * 43 + " "]
        ),
        "code_challenge_method": st.sampled_from(["plain", "s256", "", "S256 "]),
        "state": st.one_of(st.just("a" * 1025), st.text(min_size=1, max_size=5).map(lambda t: "ok" + t)),
    }
    corrupt = draw(st.sets(st.sampled_from(sorted(valid)), max_size=3))
    pairs: list[tuple[str, str]] = []
    for name, good in valid.items():
        if name not in corrupt:
            pairs.append((name, good))
            continue
        how = draw(st.sampled_from(["missing", "odd", "bad", "bad-then-good", "good-then-bad"]))
        value = draw(odd_text) if how == "odd" else draw(bad[name])
        if how == "bad-then-good":  # Django reads the last value of a repeated parameter
            pairs += [(name, value), (name, good)]
        elif how == "good-then-bad":
            pairs += [(name, good), (name, value)]
        elif how != "missing":
            pairs.append((name, value))
    pairs += draw(
        st.lists(st.tuples(st.text(min_size=1, max_size=8).filter(lambda k: k not in valid), odd_text), max_size=3)
    )
    return draw(st.permutations(pairs))


def expected_authorize_error(params: dict[str, str], client_id: str) -> str | None:
    """The first failing check, in the order SPEC section 8 lists them (None: the request is valid)."""
    get = params.get
    if get("response_type", "") != "code":
        return MSG_RESPONSE_TYPE
    if not get("client_id", "") or not get("redirect_uri", ""):
        return MSG_CLIENT_AND_REDIRECT_REQUIRED
    if not get("code_challenge", "") or get("code_challenge_method", "") != "S256":
        return MSG_PKCE_REQUIRED
    challenge = get("code_challenge", "")
    if len(challenge) != 43 or any(not (ch.isascii() and (ch.isalnum() or ch in "-_")) for ch in challenge):
        return MSG_PKCE_CHALLENGE_FORMAT
    if get("client_id") != client_id:
        return MSG_UNKNOWN_CLIENT
    if get("redirect_uri") not in (REDIRECT_URI, PRIVATE_URI):
        return MSG_REDIRECT_NOT_REGISTERED
    state = get("state", "")
    if len(state) > 1024:
        return MSG_STATE_TOO_LONG
    if any(not 0x20 <= ord(ch) <= 0x7E for ch in state):
        return MSG_STATE_CHARACTERS
    return None


@FUZZ
@given(data=st.data())
def test_authorize_opens_a_flow_only_for_a_valid_request(oauth_client, data):
    pairs = data.draw(authorize_queries(oauth_client.client_id))
    client = browser()
    flows = ConsentFlow.objects.count()
    response = client.get("/api/oauth/per-user/authorize?" + urlencode(pairs))
    params = dict(pairs)  # the last value of each name, as Django's QueryDict.get returns it
    expected = expected_authorize_error(params, oauth_client.client_id)
    if expected is not None:
        assert_json_error(response, 400, expected)
        assert ConsentFlow.objects.count() == flows
        assert not any(name.startswith(COOKIE_PREFIX) for name in response.cookies)
        return
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith("/oauth/consent?")
    (flow_id,) = query_of(location)["flow_id"]
    flow = ConsentFlow.objects.get(flow_id=flow_id)
    assert ConsentFlow.objects.count() == flows + 1
    assert (flow.redirect_uri, flow.state, flow.code_challenge) == (
        params["redirect_uri"],
        params.get("state", ""),
        params["code_challenge"],
    )
    cookie = response.cookies[COOKIE_PREFIX + flow_id]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"


# --- 3. the identity and apps pages with random query strings -------------------------------------


@FUZZ
@given(
    page=st.sampled_from(["/oauth/consent", "/oauth/consent/mcps"]),
    flow_variant=st.sampled_from(["own", "own", "other", "random", "missing", "empty", "nul", "twice"]),
    error=st.one_of(
        st.none(),
        odd_text,
        # Around the 300 characters the banner shows, markup included.
        st.builds(lambda n, tail: "e" * n + tail, st.integers(290, 310), st.sampled_from(["", "<b>x</b>", "&amp;"])),
    ),
    extra=st.lists(
        st.tuples(st.text(min_size=1, max_size=8).filter(lambda k: k not in ("flow_id", "error")), odd_text), max_size=3
    ),
    chosen=st.booleans(),
)
def test_consent_pages_answer_any_query_with_a_page_a_redirect_or_an_error_page(
    oauth_client, pkce, page, flow_variant, error, extra, chosen
):
    client, other = browser(), browser()
    own = start_flow(client, oauth_client, pkce)
    other_id = start_flow(other, oauth_client, pkce)
    if chosen:
        services.consent_flow_set_user_id(flow=ConsentFlow.objects.get(flow_id=own), user_id="fuzzer")
    pairs = list(extra)
    flow_id = {"own": own, "other": other_id, "random": "nope", "empty": "", "nul": own + "\x00"}.get(flow_variant)
    if flow_variant == "twice":
        pairs += [("flow_id", other_id), ("flow_id", own)]
        flow_id = own
    elif flow_variant != "missing":
        pairs.append(("flow_id", flow_id))
    if error is not None:
        pairs.append(("error", error))
    before = flow_row(own)
    response = client.get(page + "?" + urlencode(pairs))
    params = dict(pairs)
    flow_id = params.get("flow_id")
    assert response.status_code < 500
    assert flow_row(own) == before
    if flow_id == own:
        if page == "/oauth/consent/mcps" and not chosen:
            assert response.status_code == 302
            assert response["Location"] == "/oauth/consent?" + urlencode({"flow_id": own, "error": MSG_CHOOSE_IDENTITY})
            return
        assert response.status_code == 200 and response["Cache-Control"] == "no-store"
        html = response.content.decode()
        shown = params.get("error", "")[:300] if page == "/oauth/consent" else ""
        if shown:
            assert f'id="consent-error">{escape(shown)}</div>' in html
        if "<script>" in (params.get("error") or ""):
            assert "<script>alert" not in html
        return
    expected = 400 if flow_id != other_id else 403
    assert response.status_code == expected
    assert response["Content-Type"].startswith("text/html")


# --- 4. the token endpoint --------------------------------------------------------------------------


def _issue_code(oauth_client, verifier: str) -> tuple[str, ConsentSession]:
    flow, _ = services.consent_flow_start(
        response_type="code",
        client_id=oauth_client.client_id,
        redirect_uri=REDIRECT_URI,
        code_challenge=s256_challenge(verifier),
        code_challenge_method="S256",
        state="s",
    )
    services.consent_flow_set_user_id(flow=flow, user_id="fuzzer")
    location = services.consent_flow_submit(flow=flow)
    return query_of(location)["code"][0], ConsentSession.objects.get(flow=flow)


@st.composite
def token_forms(draw, real: dict[str, str]) -> dict[str, str]:
    """The right form with up to two fields missing, empty, odd or nearly right."""
    size = draw(st.sampled_from([0, 1, 1, 1, 2]))
    corrupt = draw(st.sets(st.sampled_from(sorted(real)), min_size=size, max_size=size))
    form: dict[str, str] = {}
    for name, good in real.items():
        if name not in corrupt:
            form[name] = good
            continue
        how = draw(st.sampled_from(["missing", "empty", "odd", "near"]))
        if how == "empty":
            form[name] = ""
        elif how == "odd":
            form[name] = draw(odd_text)
        elif how == "near":
            form[name] = draw(st.sampled_from([good + "x", good[:-1], good.upper(), " " + good]))
    extra = st.text(min_size=1, max_size=10).filter(lambda k: k not in real)
    form.update(draw(st.dictionaries(extra, odd_text, max_size=3)))
    return form


@FUZZ
@given(data=st.data(), reuse=st.sampled_from([False, False, False, True]))
def test_token_endpoint_answers_rfc_6749_and_spends_a_code_only_as_documented(oauth_client, data, reuse):
    verifier = "v" * 43 + secrets.token_urlsafe(8)
    code, session = _issue_code(oauth_client, verifier)
    if reuse:  # the code was already exchanged once
        services.authorization_code_redeem(
            code=code, code_verifier=verifier, client_id=oauth_client.client_id, redirect_uri=REDIRECT_URI
        )
    real = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "client_id": oauth_client.client_id,
        "redirect_uri": REDIRECT_URI,
    }
    form = data.draw(token_forms(real))
    row = AuthorizationCode.objects.get(session=session)
    session.refresh_from_db()
    before = (row.used_at, session.access_token_digest, session.revoked_at)

    response = Client().post("/api/oauth/per-user/token", form)
    assert response.status_code < 500
    payload = json.loads(response.content)
    assert response["Cache-Control"] == "no-store"
    get = form.get
    row.refresh_from_db()
    session.refresh_from_db()
    after = (row.used_at, session.access_token_digest, session.revoked_at)

    if not get("grant_type"):
        expected = (400, "invalid_request")
    elif get("grant_type") != "authorization_code":
        expected = (400, "unsupported_grant_type")
    elif not all(get(name) for name in ("code", "code_verifier", "client_id", "redirect_uri")):
        expected = (400, "invalid_request")
    elif get("client_id") != oauth_client.client_id:
        expected = (401, "invalid_client")
    elif get("code") != code or reuse:
        expected = (400, "invalid_grant")
    elif get("redirect_uri") != REDIRECT_URI or get("code_verifier") != verifier:
        expected = (400, "invalid_grant")
    else:
        expected = (200, None)

    if expected[0] == 200:
        assert response.status_code == 200
        assert payload["token_type"] == "Bearer" and payload["expires_in"] > 0 and payload["access_token"]
        assert after[0] is not None and after[1] is not None and after[2] is None
        return
    assert (response.status_code, payload["error"]) == expected, (form, payload)
    assert set(payload) == {"error", "error_description"} and payload["error_description"]
    presented_known_code = get("code") == code and expected[1] == "invalid_grant"
    if not presented_known_code:
        assert after == before  # nothing spent, nothing issued, nothing revoked
    elif reuse:
        assert after[0] == before[0] and after[2] is not None  # a replayed code revokes its session
    else:
        assert after[0] is not None and after[1] is None  # one guess: a wrong verifier spends it
