"""``appliance bench``: measure the loop against bare inference, print JSON."""

from __future__ import annotations

import os
from pathlib import Path

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
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS run of `appliance run`")


def bench_command(args) -> int:
    """Benchmark the loop: efficiency vs bare invoke(), bytes written, peak RSS, inference ms.

    Efficiency is the loop's frames/s divided by bare invoke() frames/s on the same model, threads
    and machine in the same run, with the replay camera serving pre-scaled frames from memory.

    Example:
        appliance bench --images ../shared/images --frames 1000 > bench.json
    """
    from appliance.bench.classify import main_json

    if args.images is None:
        raise ConfigError("appliance bench", "--images", "no photo folder given", "a folder of photos")
    model = args.model or default_models_dir() / load_catalog().default.filename
    print(main_json(model_path=model, images_dir=args.images, frames=args.frames, num_threads=args.threads,
                    measure_rss=not args.no_rss))
    return 0
