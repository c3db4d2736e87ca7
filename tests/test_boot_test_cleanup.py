"""image/test-boot.sh's clean-up, run on its own: every step is tried even when the ones before it fail
(QEMU already gone, a loop device already detached, no build log), the multi-GB work dir always goes,
and the script still exits with the boot test's own status."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BOOT_TEST = REPO / "image" / "test-boot.sh"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs where the boot test mounts a stick")


def cleanup_function() -> str:
    match = re.search(r"^cleanup\(\) \{\n.*?^\}\n", BOOT_TEST.read_text(), re.MULTILINE | re.DOTALL)
    assert match, f"no cleanup() in {BOOT_TEST}"
    return match.group(0)


@pytest.mark.parametrize("status", [0, 3])
def test_clean_up_runs_every_step_and_keeps_the_exit_status_when_qemu_is_already_gone(tmp_path, status):
    work, logs = tmp_path / "appliance-boot-test.XXXX", tmp_path / "boot-test-logs"
    (work / "deploy").mkdir(parents=True)
    (work / "console-first.log").write_text("the first boot's console\n")
    (work / "card.img").write_bytes(b"\0" * 4096)
    stick = work / "stick-ext4"
    stick.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(stick)], check=True)
    no_such_pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # QEMU is gone: kill fails
    script = (f"set -euo pipefail\n{cleanup_function()}"
              f"WORK={shlex.quote(str(work))} LOGS={shlex.quote(str(logs))} QEMU_PID={no_such_pid}\n"
              "LOOPS=(/dev/no-such-loop)\n"  # losetup -d fails; and there is no build log for cp
              f"trap cleanup EXIT\nexit {status}\n")
    try:
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    finally:
        if os.path.ismount(stick):
            subprocess.run(["umount", "-l", str(stick)], check=False)
    assert result.returncode == status, result.stderr
    assert not work.exists(), "the work dir was left behind"
    assert (logs / "console-first.log").read_text() == "the first boot's console\n"
    assert ("boot test failed" in result.stderr) == (status != 0), result.stderr
