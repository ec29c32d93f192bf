"""Headless Chromium for page tests: Playwright's sync API driving Debian's /usr/bin/chromium
(scripts/setup.sh installs both; Playwright never downloads a browser here).

    with chromium_page() as page:
        page.goto(url)
        shot(page, "login")        # -> <artefacts>/login.png

Artefacts go to `artefact_dir`, else $MXSTACK_E2E_ARTEFACTS, else <repo>/target/e2e-artefacts.
"""

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]


def artefacts(artefact_dir=None) -> Path:
    d = Path(artefact_dir or os.environ.get("MXSTACK_E2E_ARTEFACTS") or REPO / "target" / "e2e-artefacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def chromium_page(artefact_dir=None, timeout_ms=15000):
    """A page in a fresh headless Chromium (its own temporary profile, removed afterwards).
    `page.artefact_dir` is where `shot` writes."""
    from playwright.sync_api import sync_playwright

    out = artefacts(artefact_dir)
    profile = tempfile.mkdtemp(prefix="mxstack-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.set_default_timeout(timeout_ms)
                page.artefact_dir = out
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def shot(page, name, artefact_dir=None) -> Path:
    """A full-page PNG of `page` as <artefact dir>/<name>.png; returns its path."""
    d = artefacts(artefact_dir or getattr(page, "artefact_dir", None))
    path = d / (re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.contextmanager
def chromium_pages(count, artefact_dir=None, timeout_ms=15000):
    """`count` pages in one headless Chromium, each in its own context (own cookies): several
    people at once. Playwright's sync API allows one instance per thread, hence one browser."""
    from playwright.sync_api import sync_playwright

    out = artefacts(artefact_dir)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            pages = []
            for _ in range(count):
                page = browser.new_context(accept_downloads=True).new_page()
                page.set_default_timeout(timeout_ms)
                page.artefact_dir = out
                pages.append(page)
            yield pages
        finally:
            browser.close()
