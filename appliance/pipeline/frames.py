"""The plain objects a frame passes through: ``Frame`` → ``Classification`` → ``Keep`` | ``Discard``.

None of them does I/O; a test can build each by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np


class MainImage(Protocol):
    """A handle to the full-resolution image captured with a frame's ``lores`` array."""

    def array(self) -> np.ndarray:
        """The full-resolution image as an RGB ``uint8`` array of shape (height, width, 3)."""

    def detach(self) -> "MainImage":
        """A handle that stays valid after the frame is released (a copy, if the camera lends buffers).

        The loop calls it only for frames it keeps, on the hot path, so it must be cheap: the writer
        thread, not this call, does the decoding or encoding.
        """


@dataclass(frozen=True)
class ArrayImage:
    """A main image that is already in memory."""

    rgb: np.ndarray

    def array(self) -> np.ndarray:
        return self.rgb

    def detach(self) -> ArrayImage:
        return self


@dataclass(eq=False)
class Frame:
    """One camera frame.

    ``lores`` is RGB ``uint8`` at the model's input size; ``main`` is a handle to the full-resolution
    image from the same capture; ``timestamp_s`` is monotonic seconds (for the policy's timing),
    ``captured_at_s`` wall-clock seconds since the epoch (for the record); ``source`` names where the
    frame came from (a replayed file's name, or a camera id). Call ``release()`` once the frame is
    decided: a real camera lends its buffers and wants them back promptly.
    """

    lores: np.ndarray
    main: MainImage
    timestamp_s: float
    captured_at_s: float
    source: str
    _release: Callable[[], None] | None = field(default=None, repr=False)

    def release(self) -> None:
        """Give the camera's buffers back; safe to call more than once."""
        release, self._release = self._release, None
        if release is not None:
            release()


@dataclass(frozen=True)
class Classification:
    """What the model said about one frame: top-k ``(label, score)`` pairs, best first."""

    top_k: tuple[tuple[str, float], ...]
    inference_ms: float
    backend: str

    @property
    def label(self) -> str:
        return self.top_k[0][0]

    @property
    def score(self) -> float:
        return self.top_k[0][1]


@dataclass(frozen=True)
class Keep:
    """Keep this frame: ``label`` and ``score`` are what it is kept as; ``kind`` is match or audit."""

    reason: str
    label: str
    score: float
    kind: str = "match"

    is_keep = True


@dataclass(frozen=True)
class Discard:
    """Do not keep this frame, and write nothing for it."""

    reason: str

    is_keep = False


Decision = Keep | Discard
