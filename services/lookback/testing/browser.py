"""A real headless browser for page tests: Debian's Chromium, driven by
Playwright for Python (its own browser download cannot be used here, so the
system's Chromium is given by ``executable_path``). Installed from Debian's
packages when missing and this runs as root; otherwise a clear failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")


def chromium_path() -> str:
    """The system Chromium, installing the Debian package if needed (as root)."""
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() != 0:
        raise RuntimeError("Chromium is not installed: sudo apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env, capture_output=True
    )
    found = shutil.which("chromium")
    if not found:
        raise RuntimeError("apt-get installed chromium, but it is not on PATH")
    return found


@asynccontextmanager
async def browser_page() -> AsyncIterator[Any]:
    """A fresh page in headless Chromium (closed afterwards)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            yield page
        finally:
            await browser.close()
