"""Pure OAuth rules: which redirect URIs may be registered, PKCE S256, query building."""

from __future__ import annotations

import pytest

from consent.oauth import (
    RedirectUriError,
    add_query,
    pkce_matches,
    s256_challenge,
    validate_redirect_uri,
    validate_redirect_uris,
)


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.com/callback",
        "https://app.example.com:8443/cb?tenant=1",
        "http://127.0.0.1:8765/callback",
        "http://localhost:3000/oauth",
        "http://[::1]:9000/cb",
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "com.example.app:/oauth2redirect",
        "vscode://vscode.github-authentication/did-authenticate",
    ],
)
def test_acceptable_redirect_uris_are_kept_as_given(uri):
    assert validate_redirect_uri(uri) == uri


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("javascript:alert(1)", "scheme 'javascript' is not allowed"),
        ("JavaScript:alert(1)", "scheme 'javascript' is not allowed"),
        ("data:text/html,<script>alert(1)</script>", "scheme 'data' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("http://evil.example.com/cb", "plain http is only allowed on a loopback host"),
        ("http://127.0.0.1.evil.example.com/cb", "plain http is only allowed on a loopback host"),
        ("https:///no-host", "has no host"),
        ("https://app.example.com/cb#frag", "must not contain a fragment"),
        ("https://user:pw@app.example.com/cb", "must not contain credentials"),
        ("/relative/path", "is not an absolute URI"),
        ("https://app.example.com/a b", "whitespace or control characters"),
        ("https://app.example.com:99999/cb", "is malformed"),
        ("", "non-empty strings"),
    ],
)
def test_dangerous_or_malformed_redirect_uris_are_refused_with_the_reason(uri, fragment):
    with pytest.raises(RedirectUriError, match=None) as info:
        validate_redirect_uri(uri)
    assert fragment in str(info.value)


def test_redirect_uri_list_must_be_a_non_empty_list_without_duplicates():
    with pytest.raises(RedirectUriError, match="non-empty list"):
        validate_redirect_uris([])
    with pytest.raises(RedirectUriError, match="non-empty list"):
        validate_redirect_uris("https://app.example.com/cb")
    with pytest.raises(RedirectUriError, match="duplicates"):
        validate_redirect_uris(["https://a.example.com/cb", "https://a.example.com/cb"])


def test_s256_challenge_matches_the_rfc_7636_example():
    # RFC 7636 appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert pkce_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")


def test_pkce_refuses_a_wrong_or_malformed_verifier():
    challenge = s256_challenge("a" * 43)
    assert not pkce_matches("b" * 43, challenge)
    assert not pkce_matches("short", s256_challenge("short"))
    assert not pkce_matches("a" * 129, s256_challenge("a" * 129))


def test_add_query_keeps_the_registered_query_and_encodes_values():
    assert add_query("https://a.example.com/cb?tenant=1", {"code": "c/d", "state": "x y"}) == (
        "https://a.example.com/cb?tenant=1&code=c%2Fd&state=x+y"
    )
    assert add_query("cursor://anysphere.cursor-mcp/oauth", {"code": "abc"}) == (
        "cursor://anysphere.cursor-mcp/oauth?code=abc"
    )
