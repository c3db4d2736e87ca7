"""``appliance bench-web``: measure the review page, zip export and sync at realistic sizes, print JSON."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from appliance.bench import MIN_PAIRS
from appliance.cli import add_command, positive_int
from appliance.cli.bench import pair_count
from appliance.errors import ConfigError
from appliance.inference.catalog import default_models_dir, load_catalog


def register(subparsers):
    parser = add_command(subparsers, "bench-web", bench_web_command)
    parser.add_argument("--items", type=positive_int, default=100_000, metavar="N",
                        help="captures in the gallery's store (default: 100000)")
    parser.add_argument("--zip-items", type=positive_int, default=10_000, metavar="N",
                        help="real JPEGs for the zip export and sync (default: 10000)")
    parser.add_argument("--pairs", type=pair_count, default=MIN_PAIRS, metavar="N",
                        help=f"plain download / sync pairs, or with --page-load the full-speed windows without / "
                             f"with browsers, in alternation (default and least: {MIN_PAIRS})")
    parser.add_argument("--skip-zip", action="store_true", help="measure the gallery only")
    load = parser.add_argument_group("page load (--page-load: what browsing the page costs the camera's keeps)")
    load.add_argument("--page-load", action="store_true",
                      help="measure the loop's keeps and frames/s while browsers use the page (instead of the above)")
    load.add_argument("--model", type=Path, default=None, help="model (default: the catalog's default model)")
    load.add_argument("--images", type=Path, default=os.environ.get("APPLIANCE_DEMO_IMAGES"),
                      help="photos the replay camera plays (default: $APPLIANCE_DEMO_IMAGES)")
    load.add_argument("--clients", type=positive_int, default=8, metavar="N", help="browsers at once (default: 8)")
    load.add_argument("--requests", type=positive_int, default=500, metavar="N",
                      help="requests of each browser at the camera's frame rate (default: 500)")
    load.add_argument("--fps", type=positive_float, default=5.0, help="the camera's frame rate (default: 5)")
    load.add_argument("--window-s", type=positive_float, default=20.0, metavar="S",
                      help="each window without browsers, and each full-speed window with them (default: 20)")
    load.add_argument("--threads", type=int, default=0, help="inference threads (0: every core but one)")
    load.add_argument("--no-priorities", action="store_true",
                      help="run every process at nice 0 instead of the systemd units' Nice= values")


def positive_float(value: str) -> float:
    """An argparse type: a number above 0."""
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return number


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

    With --page-load it measures instead what browsing the page costs the camera: `appliance run`
    (replay camera over --images, the real model, every frame kept), the page server and --clients
    browsers run as three processes, at the Nice= values of appliance.service and
    appliance-web.service (the browsers at the page's). At --fps, a --window-s window with nobody
    browsing, then --clients × --requests requests (gallery pages and the status API in turn):
    keeps/s, keeps dropped ("writer-behind"), gallery and status API p50/p95 ms. At full speed
    (fps 0, nothing kept), the loop's frames/s in --window-s windows without and with the browsers,
    --pairs of each in alternation: "with_vs_without" is the median of the per-pair ratios.

    Example:
        appliance bench-web --items 100000 --zip-items 10000 --pairs 5 > bench-web.json
        appliance bench-web --page-load --images ../shared/images --clients 8 --requests 500 > page-load.json
    """
    if args.page_load:
        from appliance.bench.page_load import main_json as page_load_json

        if args.images is None:
            raise ConfigError("appliance bench-web", "--images", "no photo folder given", "a folder of photos")
        model = args.model or default_models_dir() / load_catalog().default.filename
        print(page_load_json(model_path=model, images_dir=args.images, items=args.items, clients=args.clients,
                             requests=args.requests, fps=args.fps, pairs=args.pairs, window_s=args.window_s,
                             num_threads=args.threads, is_prioritised=not args.no_priorities))
        return 0
    from appliance.bench.web import main_json

    print(main_json(items=args.items, zip_items=args.zip_items, is_zip_skipped=args.skip_zip, pairs=args.pairs))
    return 0
