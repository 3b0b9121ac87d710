"""The upstream HTTP/1.1 client against scripted servers: framing, keep-alive, failures, TLS."""

from __future__ import annotations

import gzip
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from proxy import http1

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


class Scripted:
    """A TCP server running ``script(sock, request_bytes)`` for every request it reads; the
    script's return value says whether to keep the connection open for another request."""

    def __init__(self, script: Callable[[socket.socket, bytes], bool], tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += sock.recv(65536)
                request, buf = head + b"\r\n\r\n" + buf[:length], buf[length:]
                self.requests.append(request)
                if not self.script(sock, request):
                    return
        except OSError:
            return
        finally:
            sock.close()

    def pool(self, scheme: str = "http", host: str = "127.0.0.1") -> http1.Pool:
        return http1.Pool(scheme, host, self.port, maxsize=4)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve():
    servers: list[Scripted] = []

    def make(script, tls=None) -> Scripted:
        servers.append(Scripted(script, tls))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def call(pool: http1.Pool, body: bytes | None = b"{}", method: str = "POST", headers=(), read_timeout: float = 2.0):
    return http1.request(pool, method, "/v1/x", list(headers), body, connect_timeout=2.0, read_timeout=read_timeout)


def reply(data: bytes, keep: bool = True) -> Callable[[socket.socket, bytes], bool]:
    def script(sock: socket.socket, request: bytes) -> bool:
        sock.sendall(data)
        return keep

    return script


def test_content_length_answer_is_read_and_the_connection_reused(serve):
    server = serve(reply(OK_HEAD + b'Content-Length: 11\r\nX-Trace: a b\r\n\r\n{"ok":true}'))
    pool = server.pool()
    for _ in range(3):
        answer = call(pool, b'{"model":"m"}', headers=[("authorization", "Bearer k")])
        assert (answer.status, answer.reason, answer.read(1000)) == (200, "OK", b'{"ok":true}')
        assert answer.header("x-trace") == "a b"
        assert ("X-Trace", "a b") in answer.headers
        answer.release()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/x HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n" % server.port)
    assert b'authorization: Bearer k\r\ncontent-length: 13\r\n\r\n{"model":"m"}' in first


def test_chunked_answer_split_across_reads_streams_each_arrival(serve):
    arrived = threading.Event()

    def script(sock, request):
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        time.sleep(0.05)
        sock.sendall(b"lo\r\n6;ext=1\r\n world\r\n")
        arrived.wait(2)
        sock.sendall(b"0\r\nX-Trailer: t\r\n\r\n")
        return True

    server = serve(script)
    pool = server.pool()
    answer = call(pool)
    pieces = []
    for piece in answer.stream():
        pieces.append(piece)
        if b"".join(pieces) == b"hello world":
            arrived.set()  # the last chunk is sent only once the first ones were handed on
    assert b"".join(pieces) == b"hello world"
    assert answer.complete
    answer.release()
    assert len(pool.idle) == 1


def test_read_to_close_answer_is_not_reused(serve):
    server = serve(reply(b"HTTP/1.0 200 OK\r\n\r\nall of it", keep=False))
    pool = server.pool()
    answer = call(pool)
    assert answer.read(100) == b"all of it"
    answer.release()
    assert not pool.idle


def test_no_body_answers_and_interim_answers(serve):
    server = serve(reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"))
    pool = server.pool()
    answer = call(pool)
    assert (answer.status, answer.read(10)) == (204, b"")
    answer.release()
    assert len(pool.idle) == 1


def test_connection_close_header_is_honoured(serve):
    server = serve(reply(OK_HEAD + b"Connection: close\r\nContent-Length: 2\r\n\r\n{}", keep=False))
    pool = server.pool()
    answer = call(pool)
    assert answer.read(10) == b"{}"
    answer.release()
    assert not pool.idle


def test_idle_connection_closed_by_the_server_is_replaced(serve):
    server = serve(reply(OK_HEAD + b"Content-Length: 2\r\n\r\n{}", keep=False))  # closes after answering
    pool = server.pool()
    for _ in range(2):
        answer = call(pool)
        assert answer.read(10) == b"{}"
        answer.release()  # kept: the answer did not say it would close
        time.sleep(0.05)
    assert server.connections == 2
    assert len(server.requests) == 2


def test_gzip_answer_is_decoded(serve):
    packed = gzip.compress(b'{"usage":{"prompt_tokens":3}}')
    server = serve(reply(OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed) + packed))
    answer = call(server.pool())
    assert answer.read(1000) == b'{"usage":{"prompt_tokens":3}}'


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "connection closed mid-body"),
        (b"", "connection closed before an answer"),
        (b"SMTP ready\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "invalid Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            "answer has both Content-Length and Transfer-Encoding",
        ),
        (
            b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
            "answer has both Content-Length and Transfer-Encoding",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\n folded\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n", "unsupported Content-Encoding 'br'"),
    ],
)
def test_broken_answers_raise_upstream_error_naming_the_problem(serve, answer, message):
    server = serve(reply(answer, keep=False))
    pool = server.pool()
    with pytest.raises(http1.UpstreamError, match=message):
        call(pool).read(1000)
    assert not pool.idle


def test_answer_over_the_limit_is_refused_and_the_connection_dropped(serve):
    server = serve(reply(OK_HEAD + b"Content-Length: 5000\r\n\r\n" + b"x" * 5000))
    pool = server.pool()
    answer = call(pool)
    with pytest.raises(http1.UpstreamError, match="answer larger than 1024 bytes"):
        answer.read(1024)
    answer.release()
    assert not pool.idle


def test_read_timeout(serve):
    server = serve(lambda sock, request: time.sleep(1) or False)
    with pytest.raises(http1.ReadTimeout, match="no data within 0.2s"):
        call(server.pool(), read_timeout=0.2)


def test_refused_connection_is_connect_failed():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        pool = http1.Pool("http", "127.0.0.1", port, maxsize=1)
        with pytest.raises(http1.ConnectFailed, match="cannot connect: ConnectionRefusedError"):
            call(pool)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (("x-a", "v\r\nx-injected: 1"), "header 'x-a' holds a line break or NUL"),
        (("bad name", "v"), "header name 'bad name' is not a valid token"),
        (("x-a", "caf\u00e9 \u2603"), "outside ISO-8859-1"),
    ],
)
def test_headers_that_could_split_the_request_are_refused_before_sending(serve, header, message):
    server = serve(reply(OK_HEAD + b"Content-Length: 2\r\n\r\n{}"))
    with pytest.raises(ValueError, match=message):
        call(server.pool(), headers=[header])
    assert server.requests == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_verifies_the_certificate_against_the_trust_store(serve, certificate, monkeypatch):
    cert, key = certificate
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    server = serve(reply(OK_HEAD + b"Content-Length: 2\r\n\r\n{}"), tls=server_side)

    http1.reset_tls_context()  # the system store does not trust this self-signed certificate
    with pytest.raises(http1.ConnectFailed, match="TLS failed: CERTIFICATE_VERIFY_FAILED"):
        call(server.pool("https", "localhost"))

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    http1.reset_tls_context()
    try:
        pool = server.pool("https", "localhost")
        for _ in range(2):
            answer = call(pool)
            assert (answer.status, answer.read(10)) == (200, b"{}")
            answer.release()
        assert server.connections == 2  # the failed handshake, then one kept-alive connection
    finally:
        http1.reset_tls_context()
