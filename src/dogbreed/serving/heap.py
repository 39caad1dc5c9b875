"""Freed heap memory back to the system.

glibc keeps what a process frees mapped for reuse: after a big request (a 40-megapixel PNG decodes to 120 MB)
the pages stay resident in the arena of the thread that decoded it, one arena per thread. On the native front's
16 request threads a burst of big images left 2 GB resident for good; ``malloc_trim`` hands the free pages of
every arena back.
"""

from __future__ import annotations

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
