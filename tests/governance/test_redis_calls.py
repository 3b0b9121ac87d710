"""The admit and settle calls' own Redis connections (``counters.redis_calls``), on a real
redis-server: scripts flushed or the server restarted between calls, error replies, failures."""

from __future__ import annotations

import pytest
import redis

from governance.metering.counters.redis_calls import RedisCalls

# Counts its own runs, so a test can tell a script that ran twice from one that ran once.
COUNT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('ERR refused by the script')"


@pytest.fixture
def client(private_redis) -> redis.Redis:
    return redis.Redis.from_url(private_redis.url, decode_responses=True, socket_timeout=1.0)


def test_a_script_call_answers_and_keeps_one_warm_connection(client):
    calls = RedisCalls(client)
    script = client.register_script(COUNT)

    assert [calls.script(script, ["n"], [2]) for _ in range(3)] == [2, 4, 6]
    assert calls.scripts(script, [(["n"], [1]), (["m"], [5]), (["n"], [1])]) == [7, 5, 8]
    assert len(calls._idle) == 1
    assert client.get("n") == "8"


def test_scripts_flushed_between_calls_are_loaded_and_each_call_runs_once(client):
    calls = RedisCalls(client)
    script = client.register_script(COUNT)
    assert calls.script(script, ["n"], [1]) == 1

    client.script_flush()
    assert calls.script(script, ["n"], [1]) == 2
    client.script_flush()
    assert calls.scripts(script, [(["n"], [10]), (["n"], [100])]) == [12, 112]

    assert client.get("n") == "112"  # nothing ran twice


def test_a_restarted_server_gets_a_fresh_connection_and_the_script_again(client, private_redis):
    calls = RedisCalls(client)
    script = client.register_script(COUNT)
    assert calls.script(script, ["n"], [1]) == 1

    private_redis.stop()
    private_redis.start()

    # The idle connection's socket was closed by the old server: it is replaced when taken.
    assert calls.script(script, ["n"], [3]) == 3
    assert len(calls._idle) == 1


def test_an_unreachable_server_raises_redis_errors_and_keeps_no_broken_connection(client, private_redis):
    calls = RedisCalls(client)
    script = client.register_script(COUNT)
    assert calls.script(script, ["n"], [1]) == 1
    private_redis.stop()
    try:
        with pytest.raises(redis.ConnectionError):
            calls.script(script, ["n"], [1])
        assert calls._idle == []
    finally:
        private_redis.start()


def test_a_script_error_is_raised_after_every_reply_is_read(client):
    calls = RedisCalls(client)
    counting, failing = client.register_script(COUNT), client.register_script(FAIL)
    client.script_load(FAIL)

    with pytest.raises(redis.ResponseError, match="refused by the script"):
        calls.scripts(failing, [(["x"], []), (["y"], [])])

    # The connection read both error replies: it is in step and back in the list.
    assert len(calls._idle) == 1
    assert calls.script(counting, ["n"], [4]) == 4
