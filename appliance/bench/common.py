"""What the benchmarks share: A/B pairs in alternation, ratio summaries, the machine, percentiles, pixels."""

from __future__ import annotations

import logging
import os
import platform
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from appliance.bench import MIN_PAIRS

log = logging.getLogger(__name__)


@dataclass
class Pairs:
    """What ``interleaved`` measured: each side's results and the ratio of each pair, in pair order."""

    a: list
    b: list
    ratios: list[float]
    orders: list[str]  # "a, b" or "b, a": which side ran first in each pair

    @property
    def summary(self) -> dict:
        return ratio_summary(self.ratios)


def interleaved(a, b, pairs: int, ratio=lambda a_result, b_result: b_result / a_result,
                is_order_alternated=False, log_as="") -> Pairs:
    """Call ``a()`` and ``b()`` in alternation, ``pairs`` times each, and take the ratio of each pair.

    The order is A, B, A, B…; with ``is_order_alternated``, A, B, B, A, A, B…, so that neither side
    always runs right after the other (e.g. on a cache the other left warm). Each pair's ratio is
    ``ratio(a's result, b's result)`` (by default b ÷ a), rounded to 3 places: a busy moment on the
    machine skews one pair, which the median over the pairs then ignores. With ``log_as``, each pair's
    start is logged under that name (progress for long benchmarks).
    """
    if pairs < MIN_PAIRS:
        raise ValueError(f"{pairs} pairs: a ratio needs at least {MIN_PAIRS}")
    measured = Pairs([], [], [], [])
    for pair in range(pairs):
        is_b_first = is_order_alternated and pair % 2 == 1
        if log_as:
            log.info("%s: pair %d/%d", log_as, pair + 1, pairs)
        if is_b_first:
            b_result = b()
            a_result = a()
        else:
            a_result = a()
            b_result = b()
        measured.a.append(a_result)
        measured.b.append(b_result)
        measured.ratios.append(round(ratio(a_result, b_result), 3))
        measured.orders.append("b, a" if is_b_first else "a, b")
    return measured


def ratio_summary(ratios) -> dict:
    """``{median, min, max, pairs}`` of per-pair ratios."""
    ratios = list(ratios)
    return {"median": round(statistics.median(ratios), 3), "min": min(ratios), "max": max(ratios),
            "pairs": len(ratios)}


def median_of(results, key, digits=3) -> float:
    """The median of ``result[key]`` over a list of result dicts."""
    return round(statistics.median(r[key] for r in results), digits)


def machine() -> dict:
    """The machine the figures come from, and its load when the run starts (others' work skews timings)."""
    model = Path("/proc/device-tree/model")
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    return {"model": model.read_text().strip("\0\n") if model.exists() else platform.machine(),
            "cpus": os.cpu_count(), "memory_mb": memory_kb // 1024, "kernel": platform.release(),
            "python": sys.version.split()[0], "load_avg_1min_at_start": round(os.getloadavg()[0], 2)}


def percentiles(values, unit="") -> dict:
    """``n``, p50, p95 and max of ``values``; ``unit`` is appended to the keys (``p50_ms``)."""
    values = np.asarray(values)
    return {"n": len(values), f"p50{unit}": round(float(np.percentile(values, 50)), 2),
            f"p95{unit}": round(float(np.percentile(values, 95)), 2), f"max{unit}": round(float(values.max()), 2)}


def noisy_field(rng, size, sigma):
    """Smooth colour regions plus sensor-like noise: compresses like a photo, not like a test card."""
    colours = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(colours).resize(size, Image.Resampling.BICUBIC), np.float32)
    noise = rng.normal(0, sigma, (size[1], size[0], 3)).astype(np.float32) if sigma else 0
    return np.clip(field + noise, 0, 255).astype(np.uint8)
