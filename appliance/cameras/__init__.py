"""Cameras: where ``Frame``s come from.

A backend subclasses ``Camera`` and must implement:

* ``start()`` — open the device (or folder) and begin capturing; raise ``CameraError`` if it cannot.
* ``frames()`` — yield ``Frame``s, blocking until each is ready; the iterator ends when the source is
  exhausted (a replay without looping) or after ``stop()``. Each frame's ``lores`` is RGB ``uint8`` at
  ``lores_size`` (the whole field of view, area-averaged: by a camera's ISP, or by
  ``convert.area_average`` where there is none); its ``main`` is the full-resolution image from the
  same capture.
* ``close()`` — release the device; safe to call twice.

and may override ``stop()`` (make ``frames()`` end soon, from another thread) and ``describe()``.
Backends are chosen by name with ``open_camera`` and imported only when chosen, so a laptop never
imports picamera2.
"""

from __future__ import annotations

import importlib
import threading
from abc import ABC, abstractmethod
from typing import Iterator

from appliance.errors import ConfigError
from appliance.pipeline.frames import Frame

BACKENDS = {"replay": "appliance.cameras.replay:ReplayCamera",
            "picamera2": "appliance.cameras.picamera2:Picamera2Camera"}


class Camera(ABC):
    """A source of frames; see the module docstring for what a backend must provide."""

    def __init__(self, lores_size: tuple[int, int]):
        self.lores_size = tuple(lores_size)
        self._stopping = threading.Event()

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def frames(self) -> Iterator[Frame]: ...

    @abstractmethod
    def close(self) -> None: ...

    def stop(self) -> None:
        """Ask ``frames()`` to end; called from another thread."""
        self._stopping.set()

    def describe(self) -> str:
        return type(self).__name__

    @property
    def model(self) -> str | None:
        """The sensor's own name once started (libcamera's ``Model``, such as ``imx708``), for the kept
        images' EXIF; None where there is none."""
        return None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()


def open_camera(camera_config, lores_size: tuple[int, int], **options) -> Camera:
    """Build the camera backend that ``camera_config.backend`` names (not yet started)."""
    try:
        module_name, class_name = BACKENDS[camera_config.backend].split(":")
    except KeyError:
        raise ConfigError("<config>", "camera.backend", f"{camera_config.backend!r} is not a camera",
                          " or ".join(BACKENDS)) from None
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_config(camera_config, lores_size, **options)
