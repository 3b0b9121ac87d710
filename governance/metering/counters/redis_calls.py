"""The Redis calls on every governed request's path, the admit script and a batch of settle
scripts, made on connections of their own rather than through redis-py's client.

Why: redis-py's command path (the client, its retry wrapper, a pool checkout that reconnects
through another retry wrapper, the script registry, a ``SCRIPT EXISTS`` round trip before every
pipeline of scripts, packing each argument in Python) costs about 50 µs of CPU a call on a
2-core machine, half of the call; commands are packed by ``hiredis`` here. The
connections are redis-py's own (``connection_class`` with the client's ``connection_kwargs``:
the same URL, TLS, password, database, timeouts and reply parser), so only the layers above them
are left out.

- **Connections**: a last-in-first-out list per process, so the connections in use stay few
  and warm. A connection is checked when taken, as redis-py's pool does (one ``poll``): one the
  server has closed (a restart) or that holds unread data is reconnected before use.
- **Failures**: a call that fails closes its connection and raises redis-py's error; the caller
  (``RedisCounters._call``) marks Redis down. Nothing is retried here: a call whose reply was
  lost may have run, and an admit run twice reserves twice.
- **NOSCRIPT** (Redis restarted or its scripts were flushed): the script is loaded and the
  commands that got that answer run again; they did not run the first time. The others' replies
  stand, so a batch of settles never applies one twice.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from hiredis import pack_command
from redis.commands.core import Script
from redis.exceptions import NoScriptError, ResponseError


class RedisCalls:
    """Script calls on connections made like ``client``'s own (see the module doc)."""

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        self._connection_class = pool.connection_class
        self._kwargs = dict(pool.connection_kwargs)
        self._idle: list[Any] = []
        self._pid = os.getpid()

    def script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """``EVALSHA`` of a registered script: its reply (a script error is raised)."""
        return self._run(script, [(keys, args)])[0]

    def scripts(self, script: Script, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """One round trip for many calls of a script, each still atomic on its own keys; the
        replies in order. A script error is raised once every reply has been read."""
        return self._run(script, calls)

    def _run(self, script: Script, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        connection = self._take()
        try:
            replies = self._send(connection, script, calls, range(len(calls)), [None] * len(calls))
            missing = [index for index, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                connection.send_command("SCRIPT", "LOAD", script.script, check_health=False)
                connection.read_response()
                replies = self._send(connection, script, calls, missing, replies)
        except BaseException:
            connection.disconnect()
            raise
        self._idle.append(connection)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    @staticmethod
    def _send(
        connection: Any,
        script: Script,
        calls: list[tuple[list[str], list[Any]]],
        indexes: range | list[int],
        replies: list[Any],
    ) -> list[Any]:
        """Send the calls at ``indexes`` in one write, read their replies into ``replies``."""
        # hiredis packs a whole command in C; redis-py's packer first walks every argument in Python.
        packed = b"".join(
            [pack_command(("EVALSHA", script.sha, len(calls[i][0]), *calls[i][0], *calls[i][1])) for i in indexes]
        )
        connection.send_packed_command([packed], check_health=False)
        for index in indexes:
            try:
                replies[index] = connection.read_response()
            except ResponseError as exc:  # the reply was read; the connection is still in step
                replies[index] = exc
        return replies

    def _take(self) -> Any:
        pid = os.getpid()
        if pid != self._pid:  # inherited over fork(): those sockets are the parent's
            self._idle, self._pid = [], pid
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = self._connection_class(**self._kwargs)
            connection.connect()
            return connection
        try:
            stale = connection.can_read()  # a reply nobody read, or the server closed it
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            stale = True
        if stale:
            connection.disconnect()
            connection.connect()
        return connection
