"""Debian's headless Chromium, as the page tests drive it through Playwright.

``make system-deps`` installs ``/usr/bin/chromium``; the flags keep it off the network and
quiet (no sync, no component updates, no QUIC), so a test sees only the requests its page makes.
"""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
