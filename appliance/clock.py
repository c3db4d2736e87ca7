"""Where the wall clock's time comes from, recorded with every keep.

A Pi has no battery-backed clock unless one is fitted, and in the field there may be no network:
a capture time is only as good as its source, so each record says which it was.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

_TIME_ERROR = 5  # adjtimex(2): the kernel's clock is not synchronised
_TIMEX_BYTES = 512  # struct timex is 208 bytes on 64-bit Linux; a zeroed, larger buffer reads safely


def clock_source() -> str:
    """``"ntp"`` (kernel clock synchronised), ``"rtc"`` (a hardware clock is present) or ``"unsynced"``."""
    if _kernel_clock_is_synchronised():
        return "ntp"
    if Path("/dev/rtc0").exists():
        return "rtc"
    return "unsynced"


@functools.cache
def _adjtimex():
    """libc's adjtimex, looked up once (the process's own symbols include libc); None if absent."""
    try:
        return ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None


def _kernel_clock_is_synchronised() -> bool:
    adjtimex = _adjtimex()
    if adjtimex is None:
        return False
    state = adjtimex(ctypes.create_string_buffer(_TIMEX_BYTES))  # all-zero modes: read only
    return state >= 0 and state != _TIME_ERROR
