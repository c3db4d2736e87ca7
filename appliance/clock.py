"""The wall clock: where its time comes from, and the one way the appliance writes a UTC time.

A Pi has no battery-backed clock unless one is fitted, and in the field there may be no network:
a capture time is only as good as its source, so each record says which it was. Every time the
appliance records (captures, marks, manifests, first boot) is UTC in ISO 8601 with a ``Z``.
"""

from __future__ import annotations

import ctypes
import functools
import time
from datetime import datetime, timezone
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


def utc_iso(seconds: float | None = None, timespec: str = "seconds") -> str:
    """``2026-11-29T22:26:20Z`` (``timespec="milliseconds"``: ``…:20.123Z``) for ``seconds`` since the
    epoch, now if None."""
    moment = utc_datetime(time.time() if seconds is None else seconds)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def utc_compact(seconds: float | None = None) -> str:
    """``20261129T222620Z``: the same moment, for a file name."""
    return utc_datetime(time.time() if seconds is None else seconds).strftime("%Y%m%dT%H%M%SZ")


def utc_datetime(seconds: float) -> datetime:
    """An aware ``datetime`` in UTC for ``seconds`` since the epoch."""
    return datetime.fromtimestamp(seconds, timezone.utc)
