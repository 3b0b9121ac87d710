"""What the metrics cost an inference request, in prometheus-client's multiprocess mode.

```
.venv/bin/python -m bench.metrics_cost [--requests 100000] [--batch 1000] [--keys 20] [--models 3]
```

Simulates ``proxy.accounting.finish``'s call (``telemetry.metrics.attempt``) for ``--requests``
attempts spread over ``--keys`` virtual keys and ``--models`` models (one stream in three also
records its first-chunk and inter-chunk timings, as ``proxy.bodies`` does), in a fresh
``PROMETHEUS_MULTIPROC_DIR``, and prints, per request, in thread CPU time (steadier than wall
time on a shared machine):

- **request thread**: the calls on the request's path (they append to the buffer);
- **drain**: the drain thread's work, amortized (folding labels, adding up ``--batch``
  observations, writing each touched series once to the memory-mapped files), as it runs once a
  second: ``--batch`` is the requests a worker serves in a second;
- **total**: both, the CPU a request costs; the issue's budget is 15 µs;
- for reference, the same updates written per request through prometheus-client's public calls
  (``labels(...)`` children bound once and kept): what the buffer saves.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from decimal import Decimal
from types import SimpleNamespace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="requests per drain (a worker's second)")
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--models", type=int, default=3)
    args = parser.parse_args()

    directory = tempfile.mkdtemp(prefix="bifrost-metrics-bench-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # before prometheus_client is imported
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bifrost_site.settings")
    os.environ.setdefault("BIFROST_DATA_DIR", tempfile.mkdtemp(prefix="bifrost-metrics-bench-data-"))
    import django

    django.setup()
    from telemetry import metrics

    assert metrics.MULTIPROCESS, "prometheus-client is not in multiprocess mode"
    metrics._started = True  # the bench drains by hand: no thread competing for the GIL

    keys = [
        SimpleNamespace(
            id=f"vk-{i}",
            name=f"key-{i}",
            team_id=f"team-{i % 4}",
            team_name=f"team {i % 4}",
            customer_id="c",
            customer_name="acme",
        )
        for i in range(args.keys)
    ]
    models = [f"gpt-4o-mini-{m}" for m in range(args.models)]
    work = []
    for i in range(args.requests):
        vk, model = keys[i % len(keys)], models[i % len(models)]
        resolved = SimpleNamespace(
            vk=vk,
            model=model,
            provider=SimpleNamespace(name="openai", provider_type="openai"),
            route=SimpleNamespace(request_type="chat_completion"),
        )
        fields = {
            "provider": "openai",
            "model": model,
            "request_type": "chat_completion",
            "virtual_key_id": vk.id,
            "team_id": vk.team_id,
            "customer_id": vk.customer_id,
            "status_code": 200 if i % 50 else 500,
            "prompt_tokens": 12,
            "completion_tokens": 16,
            "cached_tokens": 0,
            "latency_ms": 180 + i % 40,
            "streamed": i % 3 == 0,
            "priced": True,
            "error_type": "" if i % 50 else "upstream_error",
        }
        work.append((fields, resolved, Decimal("0.0000321"), i % 3 == 0))

    started = time.monotonic()
    hot = drain = 0.0
    for offset in range(0, len(work), args.batch):
        chunk = work[offset : offset + args.batch]
        t0 = time.thread_time()
        for fields, resolved, cost, streamed in chunk:
            if streamed:
                metrics.stream(resolved, 0.12, 0.015)
            metrics.attempt(fields, resolved, cost, started)
        t1 = time.thread_time()
        metrics.drain()
        t2 = time.thread_time()
        hot += t1 - t0
        drain += t2 - t1
    n = len(work)
    print(f"multiprocess dir: {directory}")
    print(f"{n} requests, {args.keys} keys x {args.models} models, {args.batch} per drain")
    print(f"request thread: {hot / n * 1e6:6.2f} us/request")
    print(f"drain:          {drain / n * 1e6:6.2f} us/request (amortized)")
    print(f"total:          {(hot + drain) / n * 1e6:6.2f} us/request")

    # Reference: the same updates per request through prometheus-client's calls, children bound once.
    children: dict = {}

    def child(metric, labels):
        found = children.get((metric, labels))
        if found is None:
            found = children[(metric, labels)] = metric.labels(*labels)
        return found

    t0 = time.thread_time()
    for fields, resolved, cost, streamed in work[: min(n, 20_000)]:
        labels = metrics._labels(fields["provider"], fields["model"], fields["request_type"], resolved.vk)
        ok = fields["status_code"] < 400
        child(metrics.UPSTREAM_REQUESTS, (*labels, "2xx" if ok else "5xx")).inc()
        if ok:
            child(metrics.SUCCESS_REQUESTS, labels).inc()
        else:
            child(metrics.ERROR_REQUESTS, (*labels, "500", "upstream_error")).inc()
        child(metrics.UPSTREAM_LATENCY, (*labels, "true" if ok else "false")).observe(fields["latency_ms"] / 1000)
        child(metrics.INPUT_TOKENS, labels).inc(fields["prompt_tokens"])
        child(metrics.OUTPUT_TOKENS, labels).inc(fields["completion_tokens"])
        child(metrics.COST, labels).inc(float(cost))
        if streamed:
            child(metrics.FIRST_TOKEN, labels).observe(0.12)
            child(metrics.INTER_TOKEN, labels).observe(0.015)
    direct = (time.thread_time() - t0) / min(n, 20_000)
    print(f"reference, written per request: {direct * 1e6:6.2f} us/request")


if __name__ == "__main__":
    sys.exit(main())
