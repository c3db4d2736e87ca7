"""``appliance bench-offload``: USB offload throughput, verified, beside ``cp`` + ``sync``; prints JSON."""

from __future__ import annotations

from appliance.bench import MIN_PAIRS
from appliance.cli import add_command, positive_int
from appliance.cli.bench import pair_count

# As appliance.bench.offload.FILESYSTEMS and LOOP_IO, without importing numpy for --help.
FILESYSTEMS = ("ext4", "exfat", "vfat")
LOOP_IO = ("buffered", "direct")


def register(subparsers):
    parser = add_command(subparsers, "bench-offload", bench_offload_command)
    parser.add_argument("--items", type=positive_int, default=400, metavar="N",
                        help="kept images to offload (default: 400)")
    parser.add_argument("--kb", type=positive_int, default=600, metavar="KB",
                        help="size of each image, about (default: 600, a 1920x1080 keep at quality 90)")
    parser.add_argument("--runs", "--pairs", type=pair_count, default=MIN_PAIRS, metavar="N",
                        help="cp+sync / offload pairs per filesystem, in alternation (default and least: "
                             f"{MIN_PAIRS})")
    parser.add_argument("--fs", action="append", choices=FILESYSTEMS, dest="filesystems", metavar="FS",
                        help="a filesystem to measure, repeatable: ext4, exfat, vfat (default: all three; "
                             "vfat only where the kernel has it)")
    parser.add_argument("--loop-io", action="append", choices=LOOP_IO, dest="loop_io", metavar="MODE",
                        help="how the loop device reaches its image file, repeatable: buffered (through the "
                             "host's page cache: the 'stick' is RAM) or direct (losetup --direct-io=on: "
                             "writes and the read-back reach the disk, as with a real stick) (default: both)")


def bench_offload_command(args) -> int:
    """Benchmark the USB offload (verification included) beside cp + sync of the same files. Needs root.

    Writes --items real JPEG keeps of about --kb KB into a store in a temp dir. For each filesystem
    (ext4, exFAT, and vfat where the kernel has it) makes a fresh image, loop-attaches it and mounts
    it as the appliance mounts a stick; then, --runs pairs (5 or more) in alternation on that
    filesystem, times one `cp` of every file followed by `sync`, and `offload()` (copy, fsync, read back from the
    stick, sha256 compare, mark), each from a cold page cache. Does all that once per --loop-io mode:
    buffered (the image file in the host's page cache, so the "stick" is RAM) and direct (losetup
    --direct-io=on: writes and the read-back reach the disk under the temp dir; not on tmpfs, so set
    TMPDIR=/var/tmp where /tmp is in RAM). Reports under "loop_io" → mode → "filesystems" the median
    MB/s of both, and "ratio": the median over the pairs of each pair's offload MB/s ÷ cp+sync MB/s
    (it was the ratio of the two medians before), with "ratio_min" and "ratio_max" over the pairs;
    likewise "ratio_vs_durable". Prints JSON to stdout, progress to stderr; loop devices,
    mounts and the temp dir are removed at the end.

    Example:
        sudo appliance bench-offload --items 400 --kb 600 > bench-offload.json
        sudo TMPDIR=/var/tmp appliance bench-offload --loop-io direct --fs ext4
    """
    from appliance.bench.offload import main_json

    print(main_json(items=args.items, kb=args.kb, runs=args.runs, filesystems=args.filesystems,
                    loop_io=args.loop_io))
    return 0
