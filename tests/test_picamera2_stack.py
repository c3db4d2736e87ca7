"""Importing picamera2 where it was not written for: the kms++ stand-in, the version it must have, what
an import that fails says, and where the camera's memory comes from (appliance/cameras/picamera2_stack.py).

Each import runs in a child process against a small package named ``picamera2`` built in a temp dir
with the real one's import chain (its previews import kms++ at import time, word for word) and the
methods the check looks for, so that this machine's own packages play no part.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from appliance.cameras.picamera2_stack import _cma_free_bytes, has_dma_heap

DRM_PREVIEW = '''
try:
    # If available, use pure python kms package
    import kms as pykms
    from kms import PixelFormats as PixelFormat
except ImportError:
    import pykms
    from pykms import PixelFormat


class DrmPreview:
    FMT_MAP = {"RGB888": PixelFormat.RGB888, "NV12": PixelFormat.NV12}

    def open_card(self):
        return pykms.Card("/dev/dri/card0")
'''


def fake_picamera2(root, version="0.3.38", is_new=True, init_first_line=""):
    """A package named picamera2 under ``root``, shaped like the real one as far as the import goes."""
    package = root / "picamera2"
    (package / "previews").mkdir(parents=True)
    (package / "allocators").mkdir()
    (package / "previews" / "__init__.py").write_text("from .drm_preview import DrmPreview\n")
    (package / "previews" / "drm_preview.py").write_text(DRM_PREVIEW)
    (package / "allocators" / "__init__.py").write_text(
        "class Allocator: pass\nclass DmaAllocator(Allocator): pass\n"
        "class LibcameraAllocator(Allocator):\n    def __init__(self, camera): self.camera = camera\n")
    (package / "dma_heap.py").write_text('heapNames = ["/dev/dma_heap/vidbuf_cached", "/dev/dma_heap/linux,cma"]\n')
    (package / "platform.py").write_text("from enum import Enum\nclass Platform(Enum):\n    VC4 = 0\n    PISP = 1\n")
    (package / "picamera2.py").write_text(textwrap.dedent(f"""\
        import picamera2.platform as Platform
        from picamera2.previews import DrmPreview
        RAW, VIDEO = "StreamRole.Raw", "StreamRole.VideoRecording"

        class Picamera2:
            platform = Platform.Platform.PISP
            def capture_request(self, wait=None, signal_function=None, flush=None): pass
            {"def cancel_all_and_flush(self): pass" if is_new else ""}
        """))
    (package / "__init__.py").write_text(init_first_line + "\nfrom .picamera2 import Picamera2\n"
                                         "from .platform import Platform\n")
    info = root / f"picamera2-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: picamera2\nVersion: {version}\n")
    return root


def load_in_child(path, extra=""):
    """Run picamera2_stack.load() in a child process with ``path`` first on sys.path; its stdout."""
    code = textwrap.dedent("""\
        from appliance.cameras.picamera2_stack import load
        from appliance.errors import CameraError
        try:
            stack = load()
        except CameraError as e:
            print("CameraError:", e)
        else:
            print("loaded; is_vc4:", stack.is_vc4, "; heaps:", stack.heap_names)
        """) + textwrap.dedent(extra)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), str(REPO)]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_without_kms_a_stand_in_lets_picamera2_import_and_says_what_is_missing_if_used(tmp_path):
    out = load_in_child(fake_picamera2(tmp_path), """
        import pykms
        from picamera2.previews import DrmPreview
        print("formats:", DrmPreview.FMT_MAP)
        try:
            DrmPreview().open_card()
        except AttributeError as e:
            print("used:", e)
        """)
    assert "loaded; is_vc4: False" in out and "'/dev/dma_heap/vidbuf_cached', '/dev/dma_heap/linux,cma'" in out
    assert "formats: {'RGB888': 'RGB888', 'NV12': 'NV12'}" in out
    assert "used: pykms.Card: kms++ is not installed here, so picamera2's DRM preview cannot run" in out


def test_a_real_pykms_is_used_and_pypis_unrelated_kms_does_not_count(tmp_path):
    fake_picamera2(tmp_path)
    (tmp_path / "kms.py").write_text("NAME = 'an unrelated package from PyPI'\n")  # no PixelFormats
    (tmp_path / "pykms.py").write_text("class PixelFormat:\n    RGB888, NV12 = 1, 2\nclass Card: pass\n")
    out = load_in_child(tmp_path, """
        import pykms
        print("pykms from:", pykms.__file__)
        """)
    assert "loaded" in out and f"pykms from: {tmp_path / 'pykms.py'}" in out


def test_a_picamera2_older_than_0_3_20_is_refused_with_its_version_and_what_to_do(tmp_path):
    out = load_in_child(fake_picamera2(tmp_path, version="0.3.17", is_new=False))
    assert out.strip() == ("CameraError: picamera2 0.3.17 is too old: this appliance needs 0.3.20 or newer (timeouts "
                           "on a silent camera): `sudo apt install --only-upgrade python3-picamera2`")


@pytest.mark.parametrize("first_line, expected", [
    ("raise ImportError('numpy.core.multiarray failed to import')",
     "picamera2 is installed but does not import with this numpy (numpy.core.multiarray failed to import): the "
     "OS's camera modules were built against another numpy; is a pip-installed numpy shadowing the OS one?"),
    ("raise ValueError('numpy.dtype size changed, may indicate binary incompatibility')",
     "does not import with this numpy (numpy.dtype size changed"),
    ("import libcamera_that_is_missing",
     "picamera2 is installed but libcamera_that_is_missing, which it needs, is not"),
], ids=["numpy-abi", "numpy-dtype", "missing-dependency"])
def test_a_picamera2_that_does_not_import_says_why_not_that_it_is_missing(tmp_path, first_line, expected):
    out = load_in_child(fake_picamera2(tmp_path, init_first_line=first_line))
    assert out.startswith("CameraError: ") and expected in out and "not installed" not in out


def test_a_dma_heap_counts_only_if_it_opens(tmp_path):
    heap = tmp_path / "linux,cma"
    heap.write_bytes(b"")
    assert has_dma_heap([str(tmp_path / "vidbuf_cached"), str(heap)])
    assert not has_dma_heap([str(tmp_path / "vidbuf_cached"), str(tmp_path / "missing")])


def test_free_cma_is_read_only_when_the_heap_picamera2_uses_is_the_cma_one(tmp_path):
    heaps = tmp_path / "dma_heap"
    heaps.mkdir()
    (heaps / "linux,cma").write_bytes(b"")
    (heaps / "system").write_bytes(b"")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        3884136 kB\nCmaTotal:         524288 kB\nCmaFree:          409600 kB\n")
    names = [str(heaps / "vidbuf_cached"), str(heaps / "linux,cma")]
    (heaps / "vidbuf_cached").symlink_to("linux,cma")  # Pi 4 and earlier (raspberrypi-sys-mods' udev rule)
    assert _cma_free_bytes(names, meminfo) == 409600 * 1024
    (heaps / "vidbuf_cached").unlink()
    (heaps / "vidbuf_cached").symlink_to("system")  # Pi 5: no CMA limit on camera buffers
    assert _cma_free_bytes(names, meminfo) is None
    assert _cma_free_bytes([str(tmp_path / "none")], meminfo) is None
