"""Micro-benchmark: what routing rules add to ``proxy.routing.plan``, in this process.

Usage: ``.venv/bin/python -m bench.routing_rules [--requests 1000] [--rounds 15]``

On a fresh embedded database in a temporary directory (SQLite, the host-local counter table; or
``DATABASE_URL``/``REDIS_URL`` when set): providers ``openai`` and ``cheap``, a team with a $1
budget of which $0.95 is reserved (one admission, so the live counter exists), a virtual key in
that team, and an ``InferenceRequest`` for ``gpt-4o`` with a few ordinary headers. It times
``plan`` for ``--requests`` calls per round, first with no rule, then with one global rule that
matches, ``model == "gpt-4o" && team.budget_used_percent > 90.0`` (the typical rule: a CEL
evaluation and a live capacity read of the team's budget), and prints the median per-call cost of
each and their difference. The snapshot caches are warm, as on a serving process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from decimal import Decimal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    os.environ.setdefault("BIFROST_DATA_DIR", tempfile.mkdtemp(prefix="bifrost-rules-bench-"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "bifrost_site.settings"
    os.environ.setdefault("BIFROST_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from governance.metering import enforcement, snapshot
    from governance.services import (
        provider_create,
        provider_key_create,
        routing_rule_create,
        team_create,
        virtual_key_create,
    )
    from proxy.routing import ROUTES, InferenceRequest, plan

    for name in ("openai", "cheap"):
        provider = provider_create(name=name, provider_type="openai", base_url="http://127.0.0.1:9")
        provider_key_create(provider=provider, name="main", value=f"sk-{name}-bench-secret")
    team = team_create(name="research", budgets=[{"max_limit": Decimal("1"), "reset_duration": "1d"}])
    everything = {"allowed_models": ["*"], "key_ids": ["*"]}
    _vk, value = virtual_key_create(
        name="bench",
        team=team,
        provider_configs=[{"provider": "openai", "weight": 1.0, **everything}, {"provider": "cheap", **everything}],
    )
    vk = snapshot.virtual_key(value)
    assert vk is not None
    admitted = enforcement.admit(
        request_id=uuid.uuid4(),
        budgets=vk.team_budgets,
        rate_limits=(),
        estimated_cost=Decimal("0.95"),
        estimated_tokens=0,
    )
    assert isinstance(admitted, enforcement.Admission), admitted
    environ = {
        "HTTP_AUTHORIZATION": f"Bearer {value}",
        "HTTP_USER_AGENT": "OpenAI/Python 1.60.0",
        "HTTP_ACCEPT": "application/json",
        "HTTP_X_STAINLESS_LANG": "python",
        "CONTENT_TYPE": "application/json",
    }
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 64}
    request = InferenceRequest(
        route=ROUTES["/v1/chat/completions"],
        body=body,
        model="gpt-4o",
        stream=False,
        fallbacks=[],
        vk=vk,
        client_headers=[],
        started=time.monotonic(),
        environ=environ,
    )
    providers = snapshot.providers()

    def per_call_us() -> float:
        samples = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            for _ in range(args.requests):
                plan(request, providers)
            samples.append((time.perf_counter() - started) / args.requests * 1e6)
        return statistics.median(samples)

    assert plan(request, providers)[0].provider == "openai"
    without = per_call_us()
    routing_rule_create(
        name="team-overflow",
        cel_expression='model == "gpt-4o" && team.budget_used_percent > 90.0',
        targets=[{"provider": "cheap", "weight": 1}],
    )
    snapshot.invalidate_local()
    providers = snapshot.providers()
    assert plan(request, providers)[0].provider == "cheap", "the rule should match"
    with_rule = per_call_us()
    print(f"plan(), median of {args.rounds} rounds of {args.requests} requests:")
    print(f"  no rules:           {without:7.2f} us per request")
    print(f"  one matching rule:  {with_rule:7.2f} us per request")
    print(f"  cost of the rule:   {with_rule - without:7.2f} us per request")


if __name__ == "__main__":
    main()
