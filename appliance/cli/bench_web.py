"""``appliance bench-web``: measure the review page, zip export and sync at realistic sizes, print JSON."""

from __future__ import annotations

from appliance.bench import MIN_PAIRS
from appliance.cli import add_command, positive_int
from appliance.cli.bench import pair_count


def register(subparsers):
    parser = add_command(subparsers, "bench-web", bench_web_command)
    parser.add_argument("--items", type=positive_int, default=100_000, metavar="N",
                        help="captures in the gallery's store (default: 100000)")
    parser.add_argument("--zip-items", type=positive_int, default=10_000, metavar="N",
                        help="real JPEGs for the zip export and sync (default: 10000)")
    parser.add_argument("--pairs", type=pair_count, default=MIN_PAIRS, metavar="N",
                        help=f"plain download / sync pairs, in alternation (default and least: {MIN_PAIRS})")
    parser.add_argument("--skip-zip", action="store_true", help="measure the gallery only")


def bench_web_command(args) -> int:
    """Benchmark the review page: gallery times, thumbnail caching, zip export memory, sync throughput.

    Builds a store of --items captures in a temp dir and times gallery pages (first, deep by the
    "next" cursor, every filter) in-process with Flask's test client: p50/p95/max ms each. Then
    writes --zip-items real JPEGs, streams the zip from a real server process and records its peak
    RSS growth, and runs `appliance sync` against it beside plain HTTP downloads of the same images,
    --pairs times each in alternation (plain, sync, plain, sync…). "sync_vs_plain_mb_per_s" is the
    median over the pairs of each pair's sync MB/s ÷ plain MB/s (it was one sync over one download
    before pairs), with "_min" and "_max" beside it; each side's MB/s is its median. Prints JSON
    to stdout, progress to stderr; the temp dir is removed at the end.

    Example:
        appliance bench-web --items 100000 --zip-items 10000 --pairs 5 > bench-web.json
    """
    from appliance.bench.web import main_json

    print(main_json(items=args.items, zip_items=args.zip_items, is_zip_skipped=args.skip_zip, pairs=args.pairs))
    return 0
