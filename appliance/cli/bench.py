"""``appliance bench``: measure the loop against bare inference, print JSON."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from appliance.bench import MIN_PAIRS
from appliance.cli import add_command
from appliance.errors import ConfigError
from appliance.inference.catalog import default_models_dir, load_catalog


def register(subparsers):
    parser = add_command(subparsers, "bench", bench_command)
    parser.add_argument("--model", type=Path, default=None, help="model (default: the catalog's default model)")
    parser.add_argument("--images", type=Path, default=os.environ.get("APPLIANCE_DEMO_IMAGES"),
                        help="photos, some matching the model's keep rule (default: $APPLIANCE_DEMO_IMAGES)")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0: every core)")
    parser.add_argument("--pairs", type=pair_count, default=MIN_PAIRS, metavar="N",
                        help=f"bare / loop pairs per case, in alternation (default and least: {MIN_PAIRS})")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS run of `appliance run`")


def pair_count(value: str) -> int:
    """An argparse type: how many A/B pairs a benchmark's ratio is the median of (``MIN_PAIRS`` or more)."""
    number = int(value)
    if number < MIN_PAIRS:
        raise argparse.ArgumentTypeError(f"must be {MIN_PAIRS} or more: a ratio is the median over the pairs")
    return number


def bench_command(args) -> int:
    """Benchmark the loop: efficiency vs bare invoke(), bytes written, peak RSS, inference ms.

    Runs bare invoke() and the loop --pairs times each in alternation (bare, loop, bare, loop…), for
    the loop where nothing matches and again where one frame in ten is kept. A pair's efficiency is
    its loop frames/s divided by its bare invoke() frames/s, same model, threads and machine, with
    the replay camera serving pre-scaled frames from memory. "efficiency" is the median over the
    pairs (it was one loop run over one bare run before pairs), "efficiency_min" and
    "efficiency_max" their range; frames/s figures are medians over the runs. "software_lores" is
    what a USB or virtual camera's lores (NV12 1920x1080 area-averaged to the model's input, then
    converted) costs beside one inference: the median ratio over as many pairs.

    Example:
        appliance bench --images ../shared/images --frames 1000 --pairs 5 > bench.json
    """
    from appliance.bench.classify import main_json

    if args.images is None:
        raise ConfigError("appliance bench", "--images", "no photo folder given", "a folder of photos")
    model = args.model or default_models_dir() / load_catalog().default.filename
    print(main_json(model_path=model, images_dir=args.images, frames=args.frames, num_threads=args.threads,
                    measure_rss=not args.no_rss, pairs=args.pairs))
    return 0
