"""The browser of the UI test tier: Debian's system Chromium (/usr/bin/chromium) driven by
Playwright for Python, and the screenshots a UI test keeps as its artifacts.

Playwright's own browser builds are never downloaded (`playwright install` cannot work here):
``launch_chromium`` starts the system binary through ``executable_path`` with the flags it needs
as root on a machine without network -- no sandbox, no GPU, and none of Chromium's background
connections (updates, sync, QUIC), which the closed network would refuse. Playwright gives every
launch a fresh profile directory of its own. `make test` (the Makefile's `chromium` target)
installs the package; a missing binary fails here with what to install.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright

CHROMIUM = Path(os.environ.get("MARKETDATA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def launch_chromium(pw: Playwright) -> Browser:
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium package "
                           "(`make chromium`, i.e. apt-get install -y chromium); the UI tests use the "
                           "system browser and never download one")
    return pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


class Screenshots:
    """Numbered full-page screenshots of a test's steps, kept under the test's temp dir."""

    def __init__(self, page: Page, out_dir: Path):
        self.page = page
        self.dir = out_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.paths: list[Path] = []

    def take(self, step: str) -> Path:
        name = f"{len(self.paths) + 1:02d}-{re.sub(r'[^a-z0-9]+', '-', step.lower()).strip('-')}.png"
        path = self.dir / name
        self.page.screenshot(path=str(path), full_page=True)
        self.paths.append(path)
        print(f"screenshot: {path}", flush=True)
        return path
