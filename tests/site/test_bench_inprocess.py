"""``bench.inprocess``, the in-process breakdown of a request's CPU, runs from a fresh checkout:
it answers every request with 200 (or stops saying what it got) and reports each step it times."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> subprocess.CompletedProcess:
    # Embedded mode whatever the suite runs on: the tool's own database, in a directory of its own.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    return subprocess.run(
        [sys.executable, "-m", "bench.inprocess", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_it_reports_the_cpu_of_governed_requests_and_of_each_step():
    done = run_bench("--requests", "40", "--threads", "2")

    assert done.returncode == 0, done.stderr[-2000:]
    head = re.search(r"^governed gpt-4o-mini, 40 requests on 2 thread\(s\): CPU (\d+) µs/request", done.stdout, re.M)
    assert head is not None and int(head.group(1)) > 0, done.stdout
    found = re.findall(r"^  (\S+): ([\d.]+) µs/request \((\d+) calls\)", done.stdout, re.M)
    cpu = {name: float(value) for name, value, _ in found}
    calls = {name: int(count) for name, _, count in found}
    assert {"proxy.accounting:begin", "governance.metering.enforcement:admit", "proxy.accounting:finish"} <= set(cpu)
    assert cpu["governance.metering.enforcement:admit"] > 0
    assert calls["proxy.accounting:begin"] == calls["proxy.accounting:finish"] == 40


def test_a_step_that_does_not_exist_is_named_and_nothing_runs():
    done = run_bench("--requests", "5", "--steps", "proxy.accounting:no_such_step")

    assert done.returncode != 0
    assert "proxy.accounting:no_such_step: no such function" in done.stderr
