"""``appliance bench-offload`` at a tiny size, through the real offload onto real loop-mounted images,
the loop devices buffered and with direct I/O: every figure is in its JSON, every item was
offloaded, verified and marked, and nothing is left behind. Speed is not asserted: the benchmark
measures it. Needs root, like the offload tests."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from appliance.cli import bench_offload

ITEMS, KB, RUNS = 20, 50, 5  # five pairs: the fewest a ratio is taken over

if os.geteuid() != 0 or not shutil.which("losetup"):
    pytest.skip("bench-offload mounts loop devices and drops the page cache: it needs root and losetup",
                allow_module_level=True)


def parser():
    parser = argparse.ArgumentParser(prog="appliance")
    bench_offload.register(parser.add_subparsers())
    return parser


def attached_loops() -> str:
    return subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def run():
    """One tiny run through the command itself: its parsed stdout, and the loop devices before it."""
    loops_before = attached_loops()
    return run_command("--items", str(ITEMS), "--kb", str(KB), "--runs", str(RUNS)), loops_before


def run_command(*arguments) -> dict:
    args = parser().parse_args(["bench-offload", *arguments])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def report(run):
    return run[0]


def measured(report):
    """(loop mode, filesystem name, its figures) of every filesystem measured."""
    return [(mode, name, fs) for mode, by_mode in report["loop_io"].items()
            for name, fs in by_mode["filesystems"].items() if "skipped" not in fs]


def test_the_command_is_documented_with_an_example():
    doc = bench_offload.bench_offload_command.__doc__
    assert doc.strip().splitlines()[0] and "Example:" in doc and "appliance bench-offload" in doc
    assert parser().parse_args(["bench-offload", "--fs", "ext4", "--fs", "exfat"]).filesystems == ["ext4", "exfat"]
    assert parser().parse_args(["bench-offload", "--loop-io", "direct"]).loop_io == ["direct"]
    assert parser().parse_args(["bench-offload"]).loop_io is None  # both
    assert parser().parse_args(["bench-offload", "--pairs", "7"]).runs == 7
    for bad in (["--items", "0"], ["--fs", "ntfs"], ["--loop-io", "sync"], ["--runs", "4"]):
        with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            parser().parse_args(["bench-offload", *bad])


def test_the_source_is_a_store_of_real_jpeg_keeps_of_the_asked_size(report):
    source = report["source"]
    assert source["files"] == ITEMS and source["jpeg_quality"] == 90
    assert 0.7 * KB <= source["kb_per_file"] <= 1.3 * KB and source["bytes"] > ITEMS * KB * 700


def test_ext4_and_exfat_are_measured_in_both_loop_modes_and_vfat_only_where_the_kernel_has_it(report):
    assert list(report["loop_io"]) == ["buffered", "direct"]
    assert {(mode, name) for mode, name, _ in measured(report)} >= {
        ("buffered", "ext4"), ("buffered", "exfat"), ("direct", "ext4"), ("direct", "exfat")}
    is_vfat_there = "vfat" in Path("/proc/filesystems").read_text().split()
    for by_mode in report["loop_io"].values():
        vfat = by_mode["filesystems"]["vfat"]
        assert ("skipped" not in vfat) == is_vfat_there
        if not is_vfat_there:
            assert "no vfat driver" in vfat["skipped"]


def test_every_figure_says_its_loop_mode_and_the_loop_device_really_ran_in_it(report):
    for mode, name, fs in measured(report):
        assert fs["loop_io"] == mode, name
        assert fs["loop_direct_io"] == (mode == "direct"), (mode, name)  # as the kernel reported it
    assert "direct-io" in report["loop_io"]["direct"]["about"]


def test_with_direct_io_the_disk_under_the_image_reads_the_source_and_every_copy_back(report):
    for mode, name, fs in measured(report):
        disk = fs["disk"]
        assert disk["device"].startswith("/dev/") and all(disk[key] >= 0 for key in disk if key != "device")
        if mode == "direct":  # the source, read cold, and the read-back, which no host cache answers
            assert disk["offload_disk_read_mb"] >= 2 * fs["mb"] * 0.95, name
            assert disk["cp_sync_disk_written_mb"] >= fs["mb"] * 0.95, name


def test_every_filesystem_has_every_figure_and_they_are_positive(report):
    for mode, name, fs in measured(report):
        assert fs["files"] == ITEMS and fs["bytes"] == report["source"]["bytes"], name
        for key in ("cp_sync_mb_s", "offload_mb_s", "ratio", "cp_sync_durable_mb_s", "ratio_vs_durable", "image_mb",
                    "total_s"):
            assert fs[key] > 0, (name, key)
        # The median of the per-pair ratios, not the ratio of the two sides' medians.
        assert fs["ratio"] == round(statistics.median(fs["ratio_per_run"]), 3) and fs["pairs"] == RUNS
        assert fs["ratio_min"] <= fs["ratio"] <= fs["ratio_max"]
        assert fs["ratio_vs_durable_min"] <= fs["ratio_vs_durable"] <= fs["ratio_vs_durable_max"]
        assert set(fs["seconds"]) == {"cp", "sync", "cp_sync", "cp_sync_durable", "offload"}
        assert all(seconds > 0 for seconds in fs["seconds"].values()), name
        # Progress comes once per batch (copied, synced, verified, marked) and once at the end.
        assert fs["offload_batch_ms_all_runs"]["n"] >= RUNS and fs["offload_batch_ms_all_runs"]["p50"] > 0
        assert fs["readback_alone"]["matching"] == ITEMS and fs["readback_alone"]["mb_s"] > 0
        assert fs["readback_alone"]["as_in_offload"]["matching"] == ITEMS
        assert fs["offload_read_from_device_mb"] >= 0
        is_fuse = name == "exfat" and name not in Path("/proc/filesystems").read_text().split()
        assert fs["driver"] == ("FUSE (mount.exfat-fuse)" if is_fuse else f"kernel ({name})"), name


def test_each_run_copies_every_file_both_ways_and_the_offload_verifies_and_marks_every_item(report):
    for mode, name, fs in measured(report):
        runs = fs["runs"]
        assert [r["order"] for r in runs] == ["cp_sync, offload", "offload, cp_sync"] * (RUNS // 2) + [
            "cp_sync, offload"], name
        assert fs["ratio_per_run"] == [r["ratio"] for r in runs] and len(runs) == RUNS
        assert fs["ratio_min"] == min(fs["ratio_per_run"]) and fs["ratio_max"] == max(fs["ratio_per_run"])
        for r in runs:
            assert r["cp_files"] == ITEMS, name
            assert r["offload_copied"] == r["offload_verified"] == r["marked_offloaded"] == ITEMS, name
            assert r["cp_s"] > 0 and r["sync_s"] > 0 and r["cp_sync_s"] >= r["cp_s"]
            assert r["cp_sync_durable_s"] >= r["cp_sync_s"] and r["offload_s"] > 0
            assert r["ratio"] == round(r["offload_mb_s"] / r["cp_sync_mb_s"], 3)  # each pair's own sides


def test_the_run_leaves_no_loop_device_mount_or_temp_dir_behind(run):
    report, _ = run
    temp_dir = report["source"]["temp_dir"]
    assert not Path(temp_dir).exists()
    assert temp_dir not in Path("/proc/self/mounts").read_text()
    # Only its own loop devices are its business: other jobs on the machine may attach theirs meanwhile.
    assert temp_dir not in attached_loops()
    assert report["machine"]["cpus"] >= 1 and report["total_s"] > 0


def test_without_root_it_refuses_with_a_clear_message():
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv to run as nobody")
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         "from appliance.bench.offload import run_benchmark; run_benchmark(items=1)"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1"),
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "OffloadError: bench-offload needs root" in result.stderr


def test_one_loop_mode_alone_is_measured_when_asked_for():
    report = run_command("--items", "4", "--kb", str(KB), "--runs", str(RUNS), "--fs", "ext4", "--loop-io", "direct")
    assert list(report["loop_io"]) == ["direct"]
    ext4 = report["loop_io"]["direct"]["filesystems"]["ext4"]
    assert ext4["loop_direct_io"] and ext4["runs"][0]["offload_verified"] == 4


def test_direct_io_is_refused_where_the_temp_dir_is_in_ram(tmp_path):
    ram = tmp_path / "ram"
    ram.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(ram)], check=True)
    try:
        result = subprocess.run(
            [sys.executable, "-c", "from appliance.bench.offload import run_benchmark; "
                                   "run_benchmark(items=1, loop_io=['direct'])"],
            cwd=REPO, env=dict(os.environ, TMPDIR=str(ram), PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1"),
            capture_output=True, text=True, timeout=60)
        assert not any(ram.iterdir())  # refused before writing anything
    finally:
        subprocess.run(["umount", str(ram)], check=True)
    assert result.returncode != 0 and "is in RAM (tmpfs)" in result.stderr and "TMPDIR" in result.stderr
