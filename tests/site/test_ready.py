"""The first minutes: where the server listens by default, the ready line it prints, and the
mock upstream saying where it listens."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from bifrost_site.ready import browsable, ready_lines

ROOT = Path(__file__).resolve().parents[2]


def bind_for(monkeypatch, **env: str) -> str:
    for name in ("BIFROST_BIND", "PORT", "DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))["bind"]


def test_a_laptop_gateway_listens_on_this_machine_only_and_production_on_all_interfaces(monkeypatch):
    assert bind_for(monkeypatch) == "127.0.0.1:8080"
    assert bind_for(monkeypatch, PORT="9090") == "127.0.0.1:9090"
    assert bind_for(monkeypatch, DATABASE_URL="postgres://db/bifrost") == "0.0.0.0:8080"
    assert bind_for(monkeypatch, REDIS_URL="redis://cache:6379/0", PORT="80") == "0.0.0.0:80"
    assert bind_for(monkeypatch, BIFROST_BIND="10.0.0.5:8000", PORT="9090") == "10.0.0.5:8000"


def test_an_address_on_all_interfaces_is_shown_as_one_a_browser_here_can_open():
    assert browsable("http://0.0.0.0:8080") == "http://127.0.0.1:8080"
    assert browsable("http://10.0.0.5:8000") == "http://10.0.0.5:8000"
    assert browsable("http://[::1]:8080") == "http://[::1]:8080"


@pytest.mark.django_db
def test_the_ready_line_names_the_admin_url_and_says_how_to_create_the_first_admin(django_user_model):
    lines = ready_lines(["http://0.0.0.0:8080"])
    assert lines[0] == (
        "Bifrost gateway ready: inference at http://127.0.0.1:8080/v1 (OpenAI SDK base_url),"
        " http://127.0.0.1:8080/anthropic, http://127.0.0.1:8080/genai;"
        " admin at http://127.0.0.1:8080/admin/ (listening on all interfaces)"
    )
    assert lines[1].startswith("No admin user yet. In another terminal: .venv/bin/python manage.py createsuperuser")

    django_user_model.objects.create_superuser("root", "root@example.com", "root-password-123")
    assert ready_lines(["http://127.0.0.1:8080"]) == [
        "Bifrost gateway ready: inference at http://127.0.0.1:8080/v1 (OpenAI SDK base_url),"
        " http://127.0.0.1:8080/anthropic, http://127.0.0.1:8080/genai; admin at http://127.0.0.1:8080/admin/"
    ]


@pytest.mark.slow
def test_the_mock_upstream_prints_where_it_listens():
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.mock_upstream", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(10)
    assert line.startswith("Mock upstream listening on http://127.0.0.1:")
    assert "give a provider base_url http://127.0.0.1:" in line
