"""image/build.sh stops with a clear message, and leaves no image in deploy/, when it cannot build.

The whole build is proven by image/test-boot.sh (the boot test); these are the ways it must refuse:
a missing prerequisite, a wrong checksum, an interrupted download, a full disk. Each runs the real
script as root against a local HTTP server; none gets as far as the slow stages.
"""

from __future__ import annotations

import hashlib
import http.server
import lzma
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "image" / "build.sh"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="image/build.sh needs root (chroot, filesystems)")


def build(*args, env=None, timeout=300):
    """Run the build; ``.output`` is what a person at the terminal sees (stdout and stderr)."""
    result = subprocess.run([str(BUILD), *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    result.output = result.stdout + result.stderr
    return result


def images_in(deploy: Path) -> list[str]:
    return sorted(p.name for p in deploy.rglob("*") if ".img" in p.name)


@pytest.fixture
def dirs(tmp_path):
    deploy, cache = tmp_path / "deploy", tmp_path / "cache"
    return deploy, cache, ["--deploy", str(deploy), "--cache", str(cache)]


class Server:
    """Serves one file; ``cut_at`` makes it drop the connection after that many bytes (a pulled cable)."""

    def __init__(self, body: bytes):
        self.body, self.cut_at, self.ranges = body, None, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                start = 0
                if "Range" in self.headers:
                    server.ranges.append(self.headers["Range"])
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(server.body) - 1}/{len(server.body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(server.body) - start))
                self.end_headers()
                end = server.cut_at if server.cut_at is not None else len(server.body)
                self.wfile.write(server.body[start:end])
                if server.cut_at is not None:
                    self.wfile.flush()
                    self.connection.shutdown(2)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/raspios-test.img.xz"

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    # Not a Raspberry Pi OS image: the build must say so once it has verified and unpacked it.
    s = Server(lzma.compress(os.urandom(300_000), preset=0))
    yield s
    s.close()


def test_a_missing_prerequisite_names_the_debian_package_to_install(tmp_path, dirs):
    deploy, _, args = dirs
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(":") + ["/usr/sbin", "/sbin"]:
        for exe in Path(d).glob("*") if Path(d).is_dir() else ():
            target = bin_dir / exe.name
            if exe.name != "mcopy" and not target.exists():
                target.symlink_to(exe)
    result = build("--base", "debian", *args, env={"PATH": str(bin_dir)})
    assert result.returncode != 0
    assert "apt-get install --no-install-recommends mtools\n" in result.output, result.output
    assert images_in(deploy) == []


def test_a_wrong_checksum_stops_the_build_and_keeps_the_file_aside(server, dirs):
    deploy, cache, args = dirs
    wrong = "0" * 64
    result = build("--base", "raspios", "--raspios-url", server.url, "--raspios-sha256", wrong, *args)
    assert result.returncode != 0
    actual = hashlib.sha256(server.body).hexdigest()
    assert f"sha256 mismatch: expected {wrong}, got {actual}" in result.output, result.output
    assert "nothing was built from it" in result.output
    assert not (cache / "raspios-test.img.xz").exists() and (cache / "raspios-test.img.xz.bad").exists()
    assert images_in(deploy) == []


def test_a_url_without_a_checksum_is_refused():
    result = build("--base", "raspios", "--raspios-url", "http://127.0.0.1:9/x.img.xz")
    assert result.returncode != 0
    assert "--raspios-url needs --raspios-sha256" in result.output


def test_an_interrupted_download_is_kept_and_resumed_then_verified(server, dirs):
    deploy, cache, args = dirs
    sha256 = hashlib.sha256(server.body).hexdigest()
    server.cut_at = 100_000
    first = build("--base", "raspios", "--raspios-url", server.url, "--raspios-sha256", sha256, *args)
    assert first.returncode != 0
    assert "was interrupted or refused" in first.output and "the next run resumes it" in first.output, first.output
    assert "(curl exit 18)" in first.output, first.output  # CURLE_PARTIAL_FILE: curl's own status, not 0
    partial = cache / "raspios-test.img.xz.partial"
    assert partial.stat().st_size == 100_000
    assert images_in(deploy) == []

    server.cut_at = None
    second = build("--base", "raspios", "--raspios-url", server.url, "--raspios-sha256", sha256, *args)
    assert server.ranges == ["bytes=100000-"]
    assert (cache / "raspios-test.img.xz").read_bytes() == server.body and not partial.exists()
    # Verified, unpacked, and then recognised as not a Raspberry Pi OS image.
    assert second.returncode != 0
    assert "is not a Raspberry Pi OS image" in second.output, second.output
    assert images_in(deploy) == []


def test_a_full_deploy_disk_stops_the_build_before_it_starts(tmp_path, dirs):
    _, _, args = dirs
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        result = build("--base", "debian", *args[2:], "--deploy", str(small))
        assert result.returncode != 0
        assert f"not enough free space in {small} for the finished image (--deploy)" in result.output, result.output
        assert images_in(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_every_refusal_keeps_its_log_beside_where_the_image_would_be(server, dirs):
    deploy, _, args = dirs
    build("--base", "raspios", "--raspios-url", server.url, "--raspios-sha256", "0" * 64, *args)
    logs = list(deploy.glob("*.failed.log"))
    assert len(logs) == 1 and "sha256 mismatch" in logs[0].read_text()
    assert not [p for p in deploy.iterdir() if p.name.startswith(".partial")]


def test_coral_without_a_confirmed_runtime_pair_is_refused_at_once_saying_why(dirs):
    deploy, cache, args = dirs
    result = build("--base", "debian", "--coral", *args, timeout=60)
    assert result.returncode != 0
    assert "no Edge TPU runtime is known to match this image's LiteRT" in result.output, result.output
    assert "TensorFlow 2.19.1" in result.output and "Build without --coral" in result.output
    assert "[prerequisites] start" not in result.output  # before anything is built
    assert images_in(deploy) == []


def layout(root: Path) -> subprocess.CompletedProcess:
    """image/lib/assemble.sh's ``layout_by_partuuid`` on a root dir, as build.sh's layout stage runs it."""
    script = (f'source {REPO}/image/lib/common.sh; source {REPO}/image/lib/assemble.sh; ROOT={root}; READ_ONLY_ROOT=0; '
              'layout_by_partuuid 45b86ecd')
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)


def test_the_boot_partition_is_mounted_readable_by_root_and_the_config_group_only(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "boot" / "firmware").mkdir(parents=True)
    (tmp_path / "etc" / "group").write_text("root:x:0:\nappliance:x:999:admin\nappliance-config:x:996:appliance\n")
    assert layout(tmp_path).returncode == 0
    boot = [line.split() for line in (tmp_path / "etc" / "fstab").read_text().splitlines() if "/boot/firmware" in line]
    assert boot[0][:3] == ["PARTUUID=45b86ecd-01", "/boot/firmware", "vfat"]
    assert {"uid=0", "gid=996", "fmask=0137", "dmask=0027"} <= set(boot[0][3].split(","))
    (tmp_path / "etc" / "group").write_text("root:x:0:\nappliance:x:999:admin\n")  # sysusers never ran
    refused = layout(tmp_path)
    assert refused.returncode != 0 and "no group appliance-config" in refused.stderr
