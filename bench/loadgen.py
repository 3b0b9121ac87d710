"""A small asyncio HTTP/1.1 load generator (keep-alive, Content-Length or chunked answers).

Cheap per request (pre-built request bytes, minimal parsing) so that on a small machine it
takes as little CPU as possible from the server being measured. Every answer must be 200.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class Result:
    latencies: list[float]
    errors: int
    seconds: float
    cpu_us: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server keeps the connection open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    keep = b"connection: close" not in lower
    index = lower.find(b"content-length:")
    if index >= 0:
        end = lower.index(b"\r\n", index)
        await reader.readexactly(int(lower[index + 15 : end]))
        return status, keep
    while True:  # chunked
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return status, keep


async def _client(host, port, request, deadline, warmup_until, latencies, errors):
    """One keep-alive client; reconnects (inside the timed request) when the server closes."""
    reader = writer = None
    try:
        while True:
            started = time.perf_counter()
            if started >= deadline:
                return
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            status, keep = await _read_response(reader)
            now = time.perf_counter()
            if status != 200:
                errors.append(status)
            elif started >= warmup_until:
                latencies.append(now - started)
            if not keep:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def _run(host, port, request, concurrency, seconds, warmup):
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    warmup_until = start + warmup
    deadline = warmup_until + seconds
    await asyncio.gather(
        *(_client(host, port, request, deadline, warmup_until, latencies, errors) for _ in range(concurrency))
    )
    return Result(latencies, len(errors), seconds)


def run(host: str, port: int, request: bytes, *, concurrency: int, seconds: float, warmup: float = 1.0) -> Result:
    return asyncio.run(_run(host, port, request, concurrency, seconds, warmup))


async def _run_mixed(host, port, mix, seconds):
    results = []
    start = time.perf_counter()
    deadline = start + seconds
    clients = []
    for request, concurrency in mix:
        latencies: list[float] = []
        errors: list[int] = []
        results.append(Result(latencies, 0, seconds))
        clients += [_client(host, port, request, deadline, start, latencies, errors) for _ in range(concurrency)]
        results[-1].error_list = errors  # type: ignore[attr-defined]
    await asyncio.gather(*clients)
    for result in results:
        result.errors = len(result.error_list)  # type: ignore[attr-defined]
    return results


def run_mixed(host: str, port: int, mix: list[tuple[bytes, int]], *, seconds: float) -> list[Result]:
    """Several request kinds at once, each with its own concurrency; no warm-up (every answer counts)."""
    return asyncio.run(_run_mixed(host, port, mix, seconds))
