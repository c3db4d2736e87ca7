"""``appliance bench``: measure the loop against bare inference, print JSON (``--detector``: the two-stage loop,
a table or ``--json``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from appliance.bench import MIN_PAIRS
from appliance.cli import add_command, positive_int
from appliance.errors import ConfigError
from appliance.inference.catalog import default_models_dir, load_catalog

CLASSIFY_FRAMES = 1000
# Here, not in bench.two_stage, which imports numpy: --help stays fast.
TWO_STAGE_FRAMES = 120  # 3 rounds of the 8 sample photos, 5 frames each; a 4x3 grid makes 13 inferences a frame
TWO_STAGE_TILES = ("2x2", "3x2", "4x3")


def register(subparsers):
    parser = add_command(subparsers, "bench", bench_command)
    parser.add_argument("--model", type=Path, default=None, help="model (default: the catalog's default model)")
    parser.add_argument("--images", type=Path, default=os.environ.get("APPLIANCE_DEMO_IMAGES"),
                        help="photos, some matching the model's keep rule (default: $APPLIANCE_DEMO_IMAGES)")
    parser.add_argument("--frames", type=positive_int, default=None,
                        help=f"frames a run (default: {CLASSIFY_FRAMES}; with --detector, {TWO_STAGE_FRAMES})")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0: every core)")
    parser.add_argument("--pairs", type=pair_count, default=MIN_PAIRS, metavar="N",
                        help=f"bare / loop pairs per case, in alternation (default and least: {MIN_PAIRS})")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS run of `appliance run`")
    parser.add_argument("--detector", type=Path, default=None, metavar="MODEL",
                        help="measure the two-stage loop instead: this object detector, then --model on each crop")
    parser.add_argument("--tiles", nargs="+", type=tile_grid, default=None, metavar="COLSxROWS",
                        help="with --detector: the grids of tiles measured besides the whole frame "
                             f"(default: {' '.join(TWO_STAGE_TILES)}; none: the whole frame alone)")
    parser.add_argument("--links", action="store_true",
                        help="measure the loop with MQTT and upload on against off instead (starts Mosquitto and "
                             "SeaweedFS on 127.0.0.1, and `appliance links` beside the loop)")
    parser.add_argument("--json", action="store_true",
                        help="with --detector: print JSON instead of a table (without it, JSON is all there is)")


def pair_count(value: str) -> int:
    """An argparse type: how many A/B pairs a benchmark's ratio is the median of (``MIN_PAIRS`` or more)."""
    number = int(value)
    if number < MIN_PAIRS:
        raise argparse.ArgumentTypeError(f"must be {MIN_PAIRS} or more: a ratio is the median over the pairs")
    return number


def tile_grid(value: str) -> str:
    """An argparse type: a grid of tiles, ``COLSxROWS`` such as ``3x2``, as the config's detector.tiles spells it;
    ``none`` is "" (the whole frame alone, as an empty detector.tiles)."""
    if value.strip().lower() == "none":
        return ""
    from appliance.pipeline.detections import parse_grid

    try:
        cols, rows = parse_grid(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return f"{cols}x{rows}"


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

    With --detector MODEL, the two-stage loop instead (detect → crop → classify → track → keep) against
    the same stages run bare on the same frames: per frame the detector's invoke() on the lores (and
    one a tile), plus one classifier invoke() per target box the real stage finds. For the whole frame
    and each grid of --tiles: frames/s both ways and their ratio in pairs, inferences a frame, and ms
    p50/p95 of each stage (detector, crop+resize, classifier per crop, tracking+policy, whole frame);
    then the peak RSS of `appliance run` with both models. A table, or JSON with --json.

    With --links, the loop where one frame in ten is kept, with the links off and on in alternation
    (--pairs pairs): on, MQTT and upload are configured to a Mosquitto and a SeaweedFS started on
    127.0.0.1 as SCHED_IDLE (standing in for machines elsewhere), and `appliance links` runs beside the
    loop at nice 15, as its unit does. "ratio" is the median of the pairs' frames/s, on / off; each
    run says how many entries waited when the loop ended and how long the links took to send them.

    Example:
        appliance bench --images ../shared/images --frames 1000 --pairs 5 > bench.json
        appliance bench --images ../shared/images --detector ../shared/models/tf/ssd_mobilenet_v1_1.0_coco_quant.tflite
        appliance bench --images ../shared/images --links --pairs 5
    """
    if args.images is None:
        raise ConfigError("appliance bench", "--images", "no photo folder given", "a folder of photos")
    model = args.model or default_models_dir() / load_catalog().default.filename
    if args.links and args.detector is not None:
        raise ConfigError("appliance bench", "--links", "measures the one-stage loop", "--links without --detector")
    if args.detector is not None:
        from appliance.bench.two_stage import main_text

        print(main_text(is_json=args.json, detector_path=args.detector, model_path=model, images_dir=args.images,
                        frames=args.frames or TWO_STAGE_FRAMES,
                        tiles=[grid for grid in args.tiles or TWO_STAGE_TILES if grid],
                        num_threads=args.threads, measure_rss=not args.no_rss, pairs=args.pairs))
        return 0
    if args.tiles:
        raise ConfigError("appliance bench", "--tiles", "goes with --detector", "--detector MODEL --tiles COLSxROWS")
    from appliance.bench.classify import main_json

    print(main_json(model_path=model, images_dir=args.images, frames=args.frames or CLASSIFY_FRAMES,
                    num_threads=args.threads, measure_rss=not args.no_rss, pairs=args.pairs, links=args.links))
    return 0
