"""Freed heap memory back to the system.

glibc keeps what a process frees mapped for reuse: after a big request (a 40-megapixel PNG decodes to 120 MB)
the pages stay resident in the arena of the thread that decoded it, one arena per thread. On the native front's
16 request threads a burst of big images left 2 GB resident for good; ``malloc_trim`` hands the free pages of
every arena back.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging

log = logging.getLogger(__name__)


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_TRIM = _malloc_trim()


def trim() -> None:
    """Return the free pages of every malloc arena to the system (a few milliseconds: for after big work only)."""
    if _TRIM is None:
        log.debug("no malloc_trim here")
        return
    _TRIM(0)


class IdleTrim:
    """Trim once the server has had no request for ``after_s``. A request thread's trim after its own big request
    (``handler.predict_fn``) misses what concurrent requests free after it: a burst of four big requests at a time left
    the native front 300 MB up for good. Trimming only when idle costs a busy server nothing. Event loop only."""

    def __init__(self, after_s: float = 1.0):
        self.after_s = after_s
        self.started = 0

    def begin(self) -> None:
        self.started += 1

    def end(self, still_running: int) -> None:
        if still_running == 0:
            asyncio.get_running_loop().call_later(self.after_s, self._trim_if_idle, self.started)

    def _trim_if_idle(self, started: int) -> None:
        if self.started == started:  # nothing began since the last request ended
            trim()
