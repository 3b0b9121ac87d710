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


WIDTHS = (1400, 1920)


def log_in(page, base_url: str, username: str = "root", password: str = "root-password-123") -> None:
    """Sign in to the admin through its login form, as a person does."""
    page.goto(f"{base_url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")


def overflow(page, selector: str) -> int:
    """How many CSS pixels of ``selector`` a person cannot see without scrolling sideways: past the
    window's right edge, or hidden in its own or an enclosing scroll box (the admin wraps its
    result table in one); 0 when it fits."""
    return page.evaluate(
        """(selector) => {
            const element = document.querySelector(selector);
            if (!element) { throw new Error('no element matches ' + selector); }
            const box = element.getBoundingClientRect();
            let worst = Math.max(box.right, box.left + element.scrollWidth) - document.documentElement.clientWidth;
            for (let node = element; node && node !== document.body; node = node.parentElement) {
                if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(node).overflowX)) {
                    worst = Math.max(worst, node.scrollWidth - node.clientWidth);
                }
            }
            return Math.max(0, Math.ceil(worst));
        }""",
        selector,
    )


def screenshots(page, folder: Path, name: str, *, fits: str | None = None) -> None:
    """Write ``<name>-1400.png`` and ``<name>-1920.png`` (full page) under ``folder``; with
    ``fits``, assert that element does not overflow the window at either width."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 1000})
        if fits is not None:
            assert overflow(page, fits) == 0, f"{fits} overflows the window at {width} px"
        page.screenshot(path=str(folder / f"{name}-{width}.png"), full_page=True)
