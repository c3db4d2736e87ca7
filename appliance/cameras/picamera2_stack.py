"""picamera2 as this appliance finds it: imported, checked, and opened on systems it was not written for.

picamera2 0.3 is written for Raspberry Pi OS. Four things let the same, unmodified picamera2 run on
Debian and in the test VM, and each is the smallest that works:

* **kms++.** picamera2's DRM preview imports kms++ (``kms`` or ``pykms``) whenever picamera2 is imported,
  though only a DRM preview uses it. Debian packages neither, and PyPI's ``kms`` is an unrelated
  package. When neither imports, ``sys.modules["pykms"]`` gets a stand-in: its ``PixelFormat``
  answers any attribute with the attribute's name (picamera2 builds a table of them at import), and
  anything else raises an error saying kms++ is missing. The appliance never opens a preview.
* **Version.** The frame loop needs ``capture_request(wait=…)`` to raise ``TimeoutError`` and
  ``cancel_all_and_flush()`` to exist: picamera2 0.3.20 and later (both came in one change). An older
  one is refused at start, by that feature, with the version and what to do.
* **Cameras without a raw stream.** Opening a camera, picamera2 asks libcamera for its raw stream's
  modes (``Picamera2._get_raw_modes``). libcamera's virtual camera has no raw stream
  (``generate_configuration([Raw])`` is None), so ``open_picamera2`` uses a subclass whose
  ``_get_raw_modes`` answers from the formats of the stream it does have (VideoRecording) when, and
  only when, there is no raw stream. USB cameras (uvcvideo) answer the raw request themselves.
* **No DMA heap.** picamera2's default allocator (``DmaAllocator``) needs one of the DMA heaps it
  names (``picamera2.dma_heap.heapNames``: ``/dev/dma_heap/vidbuf_cached``, ``/dev/dma_heap/linux,cma``).
  Where none opens, the camera is opened with the allocator base class and given libcamera's own
  (``LibcameraAllocator``) before it is configured. picamera2's ``close()`` still ends by building a
  new ``DmaAllocator``, which then raises "Could not open any dmaHeap device" after the camera and
  its buffers are released; ``close_picamera2`` lets that one error pass (and only that), and the
  complaint of the half-built allocator's ``__del__`` that follows it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import types
from dataclasses import dataclass
from functools import partial

from appliance.errors import CameraError

log = logging.getLogger(__name__)

MINIMUM_VERSION = "0.3.20"
NOT_INSTALLED = ('picamera2 is not installed: on Raspberry Pi OS `sudo apt install python3-picamera2` (a virtualenv '
                 'needs --system-site-packages to see it), on Debian see hardware/README.md, or set '
                 'camera.backend = "replay"')


@dataclass(frozen=True)
class Picamera2Stack:
    """The parts of picamera2 the camera uses: ``load()`` finds the real ones; tests pass fakes of them."""

    picamera2_class: type  # picamera2.Picamera2
    raw_role: object  # libcamera.StreamRole.Raw
    video_role: object  # libcamera.StreamRole.VideoRecording
    base_allocator: type  # picamera2.allocators.Allocator
    libcamera_allocator: type  # picamera2.allocators.LibcameraAllocator
    heap_names: tuple[str, ...]  # picamera2.dma_heap.heapNames: what its DmaAllocator opens
    is_vc4: bool  # Picamera2.platform is Platform.VC4: Pi 4 and earlier, whose lores must be YUV
    cma_free_bytes: int | None = None  # free CMA when the DMA heap in use is CMA (Pi 4 and earlier), else None


def load() -> Picamera2Stack:
    """Import picamera2 (with the kms++ stand-in if needed) and check that it is new enough."""
    _stand_in_for_kms()
    try:
        import picamera2
        import picamera2.dma_heap
        from picamera2 import Picamera2, Platform
        from picamera2.allocators import Allocator, LibcameraAllocator
        from picamera2.picamera2 import RAW, VIDEO
    except ModuleNotFoundError as e:
        if e.name == "picamera2":
            raise CameraError(NOT_INSTALLED) from None
        raise CameraError(f"picamera2 is installed but {e.name}, which it needs, is not ({e}): on Raspberry Pi OS "
                          "`sudo apt install python3-picamera2` brings everything; libcamera's Python module is "
                          "python3-libcamera") from None
    except (ImportError, ValueError) as e:
        if "numpy" not in str(e) and "multiarray" not in str(e):
            raise CameraError(f"picamera2 is installed but does not import: {e}") from None
        # e.g. "numpy.core.multiarray failed to import" or "numpy.dtype size changed"
        raise CameraError(f"picamera2 is installed but does not import with this numpy ({e}): the OS's camera "
                          "modules were built against another numpy; is a pip-installed numpy shadowing the OS "
                          "one? (`python3 -m pip list | grep numpy`)") from None
    if not hasattr(Picamera2, "cancel_all_and_flush"):
        raise CameraError(f"picamera2 {_version()} is too old: this appliance needs {MINIMUM_VERSION} or newer "
                          "(timeouts on a silent camera): `sudo apt install --only-upgrade python3-picamera2`")
    heap_names = tuple(picamera2.dma_heap.heapNames)
    return Picamera2Stack(Picamera2, RAW, VIDEO, Allocator, LibcameraAllocator, heap_names,
                          Picamera2.platform == Platform.VC4, _cma_free_bytes(heap_names))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("picamera2")
    except PackageNotFoundError:
        return "(version unknown)"


class _KmsNames:
    """kms++'s ``PixelFormat`` as picamera2 uses it at import: each format's name."""

    def __getattr__(self, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        return name


class _NoKms(types.ModuleType):
    """Stands in for kms++ (``pykms``), which this system does not have; see the module docstring."""

    PixelFormat = _KmsNames()

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"pykms.{name}: kms++ is not installed here, so picamera2's DRM preview cannot run "
                             "(this appliance never opens one)")


def _stand_in_for_kms() -> None:
    """Put the kms++ stand-in in place if picamera2's own imports of kms++ would both fail."""
    try:  # as picamera2 does: kms++'s pure-Python binding (kms.PixelFormats) first, then its pybind one
        importlib.import_module("kms").PixelFormats
        return
    except (ImportError, AttributeError):
        pass
    try:
        importlib.import_module("pykms")
    except ImportError:
        sys.modules["pykms"] = _NoKms("pykms")
        log.debug("kms++ is not installed: picamera2 imports a stand-in for it (no DRM preview)")


def has_dma_heap(heap_names) -> bool:
    """Whether picamera2's DmaAllocator could open one of its DMA heaps here."""
    for name in heap_names:
        try:
            os.close(os.open(name, os.O_RDWR | os.O_CLOEXEC))
            return True
        except OSError:
            continue
    return False


def _cma_free_bytes(heap_names, meminfo="/proc/meminfo") -> int | None:
    """Free CMA, when the heap picamera2 would allocate from is the CMA heap (Pi 4 and earlier: the
    vidbuf_cached heap is a link to linux,cma; Pi 5's is the system heap, with no such limit)."""
    heap = next((name for name in heap_names if os.path.exists(name)), None)
    if heap is None or not os.path.realpath(heap).endswith("linux,cma"):
        return None
    try:
        with open(meminfo) as f:
            free_kb = next((int(line.split()[1]) for line in f if line.startswith("CmaFree:")), None)
    except OSError:
        return None
    return None if free_kb is None else free_kb * 1024


def _with_raw_modes_fallback(picamera2_class, raw_role, video_role):
    class Picamera2(picamera2_class):
        """picamera2.Picamera2, unmodified but for opening cameras that have no raw stream (see
        ``picamera2_stack``): their modes are the formats and sizes of their VideoRecording stream."""

        def _get_raw_modes(self):
            if self.camera.generate_configuration([raw_role]) is not None:
                return super()._get_raw_modes()
            formats = self.camera.generate_configuration([video_role]).at(0).formats
            return [{"format": str(pix), "size": (size.width, size.height)}
                    for pix in formats.pixel_formats for size in formats.sizes(pix)]

    return Picamera2


def open_picamera2(stack: Picamera2Stack, camera_num: int):
    """``Picamera2(camera_num)``, with libcamera's allocator where there is no DMA heap; returns the camera
    and whether it uses libcamera's allocator. Raises what picamera2 raises."""
    picamera2_class = _with_raw_modes_fallback(stack.picamera2_class, stack.raw_role, stack.video_role)
    if has_dma_heap(stack.heap_names):
        return picamera2_class(camera_num), False
    picam2 = picamera2_class(camera_num, allocator=stack.base_allocator())
    picam2.allocator = stack.libcamera_allocator(picam2.camera)
    log.info("no DMA heap (%s): buffers come from libcamera's allocator", ", ".join(stack.heap_names))
    return picam2, True


def close_picamera2(picam2, uses_libcamera_allocator: bool) -> None:
    """Stop and close; raises what picamera2 raises, bar the DmaAllocator it builds after closing when
    there is no DMA heap for it: the camera and its buffers are released by then (``is_open`` is False).
    That half-built allocator's ``__del__`` then fails too (it has no buffers to clean up), which
    Python would print as "Exception ignored in: DmaAllocator.__del__"; that one is not printed."""
    picam2.stop()
    if not uses_libcamera_allocator:
        picam2.close()
        return
    previous_hook = sys.unraisablehook
    sys.unraisablehook = partial(_unless_half_built_dma_allocator, previous_hook)
    try:
        picam2.close()
    except (RuntimeError, OSError) as e:  # DmaHeap raises RuntimeError when no heap exists, OSError when denied
        if picam2.is_open:
            raise
        # str(e): a log record holding the error would keep the half-built allocator alive past the hook.
        log.debug("picamera2 closed the camera, then could not build its next DmaAllocator: %s", str(e))
    finally:
        sys.unraisablehook = previous_hook


def _unless_half_built_dma_allocator(previous_hook, unraisable) -> None:
    function = getattr(unraisable.object, "__qualname__", "")
    if not (function == "DmaAllocator.__del__" and isinstance(unraisable.exc_value, AttributeError)):
        previous_hook(unraisable)
