"""``appliance bench-upload`` runs end to end beside a real ``rclone copy`` to a real SeaweedFS it starts itself
(tiny figures), and says in one line what it lacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO


def test_bench_upload_times_rclone_and_the_verified_upload_in_alternating_pairs(cli_env):
    done = subprocess.run([sys.executable, "-m", "appliance", "bench-upload", "--items", "6", "--kb", "60",
                           "--pairs", "5"], cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["source"]["files"] == 6 and result["source"]["same_objects_files"] == 12 and result["rclone"].startswith("rclone v")
    assert [p["order"] for p in result["pairs"]] == ["a, b", "b, a"] * 2 + ["a, b"]
    for pair in result["pairs"]:
        assert pair["ratio"] == pytest.approx(pair["appliance_mb_s"] / pair["rclone_mb_s"], abs=0.01)
    ratio, same = result["ratio"], result["ratio_same_objects"]
    assert ratio["pairs"] == 5 and ratio["min"] <= ratio["median"] <= ratio["max"]
    assert same["pairs"] == 5 and same["min"] <= same["median"] <= same["max"] and len(same["per_pair"]) == 5
    assert result["rclone_copy_same_objects"]["mb_s"] > 0
    upload = result["appliance_upload"]
    assert upload["verified_by"] == "checksum" and upload["mb_s"] > 0 and upload["seaweedfs_cpu_s"] >= 0


def test_bench_upload_without_rclone_says_so_in_one_line(cli_env, tmp_path):
    env = dict(cli_env, PATH=str(tmp_path))  # no rclone there (weed is found beside the venv's python)
    done = subprocess.run([sys.executable, "-m", "appliance", "bench-upload"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "appliance: error: the upload benchmark compares with rclone, which is not installed: install Debian's "
        "(apt-get install rclone) and run it again")
