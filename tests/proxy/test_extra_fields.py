"""``extra_fields`` is added to a JSON answer without re-encoding the upstream's bytes."""

from __future__ import annotations

import json

from proxy.handler import _with_extra_fields

EXTRA = {"provider": "openai", "latency": 3}


def spliced(data: bytes) -> bytes:
    return _with_extra_fields(data, json.loads(data), dict(EXTRA))


def test_the_upstream_bytes_are_kept_and_extra_fields_comes_last():
    data = b'{"object": "list", "data": [{"embedding": [0.10000000000000001, 1e-07, -0.0]}]}\n'
    out = spliced(data)
    assert out.startswith(data.rstrip()[:-1])  # number formatting untouched
    assert json.loads(out) == {**json.loads(data), "extra_fields": EXTRA}
    assert list(json.loads(out))[-1] == "extra_fields"


def test_an_answer_that_already_has_extra_fields_gets_ours_once():
    out = spliced(b'{"id": "x", "extra_fields": {"provider": "elsewhere"}}')
    assert out.count(b'"extra_fields"') == 1
    assert json.loads(out) == {"id": "x", "extra_fields": EXTRA}


def test_an_empty_object_and_non_utf8_json_are_re_encoded_correctly():
    assert json.loads(spliced(b"{}")) == {"extra_fields": EXTRA}
    utf16 = '{"id": "x"}'.encode("utf-16-be")
    assert json.loads(spliced(utf16)) == {"id": "x", "extra_fields": EXTRA}
    utf16le = '{"id": "x"}'.encode("utf-16-le")
    assert json.loads(spliced(utf16le)) == {"id": "x", "extra_fields": EXTRA}
