"""Debian's Chromium for the browser tests, started the one way this machine allows.

Never a downloaded browser (``playwright install`` fails offline): ``bin/install-browser``
installs Debian's package and these flags keep it off the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@contextmanager
def chromium_browser(artifacts: str) -> Iterator:
    """``(browser, screenshot folder)``; the folder ``test-artifacts/<artifacts>`` is created."""
    from playwright.sync_api import sync_playwright

    folder = ARTIFACTS / artifacts
    folder.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser, folder
        finally:
            browser.close()
