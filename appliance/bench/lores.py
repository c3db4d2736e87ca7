"""What a single-stream camera's software lores costs beside one inference (part of ``appliance bench``).

A USB webcam or libcamera's virtual camera gives no ISP-made lores: the camera makes it from ``main``
(``convert.lores_of``: the whole frame area-averaged, then converted to RGB). Here that is timed on an
NV12 1920×1080 frame (the default still_size) to the model's input size, against one ``invoke()`` of
the same classifier, in ``pairs`` pairs run in alternation; each side of a pair is the median of
``calls`` calls, and each pair's ratio is lores ms ÷ inference ms. The timing does not depend on the
pixels' values.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from appliance.bench.common import interleaved
from appliance.cameras.convert import lores_of

FRAME_SIZE = (1920, 1080)
FRAME_FORMAT = "NV12"


def software_lores_cost(classifier, pairs: int, calls: int = 50) -> dict:
    """``{frame, lores_ms, inference_ms, ratio, ratio_min, ratio_max, ratio_per_pair, pairs}``."""
    width, height = FRAME_SIZE
    rng = np.random.default_rng(0)
    frame = rng.integers(16, 236, (height * 3 // 2, width), dtype=np.uint8)  # as make_array returns NV12
    lores = lores_of(frame, FRAME_FORMAT, FRAME_SIZE, classifier.input_size, ("Rec709", False))
    for _ in range(5):  # warm up both: caches, the runtime's first invokes
        classifier.bare_invoke(lores)
        lores_of(frame, FRAME_FORMAT, FRAME_SIZE, classifier.input_size, ("Rec709", False))

    def inference_ms():
        return _median_ms(lambda: classifier.bare_invoke(lores), calls)

    def lores_ms():
        return _median_ms(lambda: lores_of(frame, FRAME_FORMAT, FRAME_SIZE, classifier.input_size,
                                           ("Rec709", False)), calls)

    measured = interleaved(inference_ms, lores_ms, pairs, ratio=lambda inference, lores: lores / inference,
                           is_order_alternated=True)
    summary = measured.summary
    return {"frame": f"{FRAME_FORMAT} {width}x{height} to {classifier.input_size[0]}x{classifier.input_size[1]} RGB",
            "lores_ms": round(statistics.median(measured.b), 3),
            "inference_ms": round(statistics.median(measured.a), 3),
            "ratio": summary["median"], "ratio_min": summary["min"], "ratio_max": summary["max"],
            "ratio_per_pair": measured.ratios, "pairs": summary["pairs"]}


def _median_ms(call, calls: int) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000
