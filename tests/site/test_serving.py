"""What both servers read from the environment (``bifrost_site.serving``) and how the granian
launcher turns it into its options (``bifrost_site.serve_granian``)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from granian.constants import HTTPModes

from bifrost_site import serve_granian, serving

SERVER_ENV = (
    "BIFROST_BIND",
    "PORT",
    "DATABASE_URL",
    "REDIS_URL",
    "BIFROST_WORKERS",
    "GUNICORN_WORKERS",
    "BIFROST_THREADS",
    "GUNICORN_THREADS",
    "BIFROST_GRACEFUL_TIMEOUT",
    "GUNICORN_GRACEFUL_TIMEOUT",
    "BIFROST_WORKER_CONNECTIONS",
    "BIFROST_ACCESSLOG",
    "GUNICORN_ACCESSLOG",
    "BIFROST_SERVER",
    "BIFROST_WAITING_THREADS",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in SERVER_ENV:
        monkeypatch.delenv(name, raising=False)


def test_embedded_mode_listens_on_this_machine_and_production_mode_on_all_interfaces(monkeypatch):
    assert serving.bind() == "127.0.0.1:8080"
    monkeypatch.setenv("PORT", "9000")
    assert serving.bind() == "127.0.0.1:9000"
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    assert serving.bind() == "0.0.0.0:9000"
    monkeypatch.setenv("BIFROST_BIND", "10.0.0.5:7000")
    assert serving.bind() == "10.0.0.5:7000"


def test_by_default_a_worker_per_core_and_one_more_each_running_16_requests(monkeypatch):
    monkeypatch.setattr(serving.multiprocessing, "cpu_count", lambda: 2)
    assert (serving.workers(), serving.threads(), serving.waiting_threads()) == (3, 16, 240)


def test_granian_advice_against_the_default_sizes_is_dropped_and_kept_for_sizes_set(monkeypatch):
    advice = serve_granian.DefaultSizeAdvice()

    def shown(message: str) -> bool:
        return advice.filter(logging.LogRecord("_granian", logging.WARNING, __file__, 1, message, None, None))

    workers = "Configured number of workers appears to be higher than the amount of CPU cores available."
    threads = "Configuration allows spawning up to 256 Python threads, which seems quite high"
    assert not shown(workers) and not shown(threads)
    assert shown("Workers respawn is configured, but the net.ipv4.tcp_migrate_req sysctl is not enabled")
    monkeypatch.setenv("BIFROST_WORKERS", "8")
    assert shown(workers) and not shown(threads)
    monkeypatch.setenv("BIFROST_WAITING_THREADS", "500")
    assert shown(threads)


def test_bifrost_names_win_over_the_gunicorn_ones_which_still_work(monkeypatch):
    monkeypatch.setenv("GUNICORN_WORKERS", "3")
    monkeypatch.setenv("GUNICORN_THREADS", "4")
    monkeypatch.setenv("GUNICORN_GRACEFUL_TIMEOUT", "12")
    assert (serving.workers(), serving.threads(), serving.graceful_timeout()) == (3, 4, 12)
    monkeypatch.setenv("BIFROST_WORKERS", "5")
    monkeypatch.setenv("BIFROST_THREADS", "6")
    monkeypatch.setenv("BIFROST_GRACEFUL_TIMEOUT", "7")
    assert (serving.workers(), serving.threads(), serving.graceful_timeout()) == (5, 6, 7)


def test_granian_serves_by_default_and_gunicorn_on_request(monkeypatch):
    assert serving.server() == "granian"
    assert serving.command() == [sys.executable, "-m", "bifrost_site.serve_granian"]
    monkeypatch.setenv("BIFROST_SERVER", "gunicorn")
    assert serving.server() == "gunicorn"
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    assert serving.command() == [gunicorn, "-c", "gunicorn.conf.py", "bifrost_site.wsgi:application"]
    assert serving.command("granian")[-1] == "bifrost_site.serve_granian"
    monkeypatch.setenv("BIFROST_SERVER", "uvicorn")
    with pytest.raises(SystemExit, match="BIFROST_SERVER must be granian or gunicorn, got 'uvicorn'"):
        serving.server()


def test_bin_run_refuses_an_unknown_server_before_setting_anything_up():
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        ["bin/run"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "BIFROST_SERVER": "waitress"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "BIFROST_SERVER must be granian or gunicorn, got 'waitress'" in done.stderr


@pytest.mark.parametrize("value", ["two", "0", "-1"])
def test_a_bad_size_stops_the_start_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("BIFROST_WORKERS", value)
    with pytest.raises(ImproperlyConfigured, match="BIFROST_WORKERS"):
        serving.workers()


@pytest.mark.parametrize(
    ("address", "parsed", "url"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080), "http://127.0.0.1:8080"),
        ("0.0.0.0:80", ("0.0.0.0", 80), "http://0.0.0.0:80"),  # noqa: S104 - a bind address under test
        ("[::1]:8080", ("::1", 8080), "http://[::1]:8080"),
        ("unix:/run/bifrost.sock", Path("/run/bifrost.sock"), "unix:/run/bifrost.sock"),
    ],
)
def test_bind_forms_as_granian_takes_them(address, parsed, url):
    assert serve_granian.parse_bind(address) == parsed
    assert serve_granian.listener_url(parsed) == url


@pytest.mark.parametrize("address", ["8080", "localhost", "host:port", ":8080"])
def test_a_bind_address_granian_cannot_take_is_refused_with_its_value(address):
    with pytest.raises(SystemExit, match=address):
        serve_granian.parse_bind(address)


def test_granian_options_bound_what_a_client_may_hold(monkeypatch):
    monkeypatch.setenv("BIFROST_BIND", "127.0.0.1:18080")
    monkeypatch.setenv("GUNICORN_WORKERS", "2")
    monkeypatch.setenv("BIFROST_THREADS", "8")
    monkeypatch.setenv("BIFROST_GRACEFUL_TIMEOUT", "20")

    server = serve_granian.build_server()

    assert (server.bind_addr, server.bind_port, server.listener) == ("127.0.0.1", 18080, "http://127.0.0.1:18080")
    # 8 request slots, and 240 threads more on which requests wait for their bodies.
    assert (server.workers, server.blocking_threads, server.backpressure) == (2, 248, 512)
    assert server.http == HTTPModes.http1
    assert server.http1_settings is not None
    assert server.http1_settings.header_read_timeout == serving.KEEPALIVE_SECONDS * 1000
    assert server.http1_settings.max_buffer_size == 64 * 1024
    assert (server.workers_kill_timeout, server.graceful_timeout) == (20, 20)
    assert server.respawn_failed_workers and not server.log_access
    monkeypatch.setenv("BIFROST_WAITING_THREADS", "10")
    assert serve_granian.build_server().blocking_threads == 18


def test_granian_access_log_on_stdout_or_in_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("BIFROST_ACCESSLOG", "-")
    assert serve_granian.build_server().log_access
    monkeypatch.setenv("BIFROST_ACCESSLOG", str(tmp_path / "access.log"))
    server = serve_granian.build_server()
    assert server.log_access
    assert server.log_config["handlers"]["access"]["filename"] == str(tmp_path / "access.log")
