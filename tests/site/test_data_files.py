"""Files the gateway creates under BIFROST_DATA_DIR hold secrets: readable by their owner only.

Run as real processes (``manage.py migrate``) with a permissive umask, as a fresh install would.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test runs manage.py migrate in a new process

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_ENV = ("DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "BIFROST_ENCRYPTION_KEY")


def manage(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    env["BIFROST_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o022),  # files would be 0644 unless created 0600 on purpose
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_migrate_creates_the_database_and_the_secret_key_owner_only(tmp_path):
    data_dir = tmp_path / "data"
    done = manage(data_dir, "migrate", "--noinput")
    assert done.returncode == 0, done.stderr
    database = data_dir / "bifrost.sqlite3"
    assert database.stat().st_size > 0  # migrate wrote its tables into the pre-created file
    assert mode(database) == 0o600
    assert mode(data_dir / "secret_key") == 0o600
    assert len((data_dir / "secret_key").read_text()) >= 50
    for sidecar in data_dir.glob("bifrost.sqlite3*"):  # -wal, -shm, .counters
        assert mode(sidecar) == 0o600, sidecar.name
    assert not list(data_dir.glob(".secret_key.*"))  # the draft is gone


def test_an_existing_secret_key_is_kept(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret_key").write_text("k" * 60)
    done = manage(data_dir, "shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "k" * 60
