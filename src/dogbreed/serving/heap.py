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
import os

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


def resident_bytes() -> int | None:
    """This process's resident memory (Linux's /proc), or None where there is no such file."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class IdleTrim:
    """Trim once the server has had no request for ``after_s``, where it holds ``growth`` bytes more than after the
    last trim. A request thread's trim after its own big request (``handler.predict_fn``) misses what concurrent
    requests free after it: a burst of four big requests at a time left the native front 300 MB up for good.
    Trimming only when idle costs a busy server nothing, and only after growth costs a client that sends a request
    every few seconds nothing either (a trim hands back the steady state's freed activations too, and the next
    request faults them in again). The trim runs on a thread of its own, not the event loop's. Event loop only."""

    def __init__(self, after_s: float = 1.0, growth: int = 32 * 2**20):
        self.after_s, self.growth = after_s, growth
        self.started = 0
        self.floor = resident_bytes()  # resident memory after the last trim

    def begin(self) -> None:
        self.started += 1

    def end(self, still_running: int) -> None:
        if still_running == 0:
            asyncio.get_running_loop().call_later(self.after_s, self._trim_if_idle, self.started)

    def _trim_if_idle(self, started: int) -> None:
        if self.started != started:  # a request began since the last one ended
            return
        resident = resident_bytes()
        if resident is None or self.floor is None or resident - self.floor > self.growth:
            asyncio.get_running_loop().run_in_executor(None, self._trim)
        elif resident < self.floor:
            self.floor = resident

    def _trim(self) -> None:
        trim()
        self.floor = resident_bytes()
