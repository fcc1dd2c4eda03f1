"""Shared rich consoles of the data layer (progress bars go to stderr, reports to stdout)."""

from __future__ import annotations

from functools import lru_cache

from rich.console import Console


@lru_cache(maxsize=1)
def stderr_console() -> Console:
    """The console progress bars draw on; stderr so reports on stdout stay clean."""
    return Console(stderr=True)


def show_progress(wanted: bool) -> bool:
    """Draw a bar only when asked and stderr is a terminal (logs and CI output stay clean)."""
    return wanted and stderr_console().is_terminal
