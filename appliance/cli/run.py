"""``appliance run`` (the loop, as the device runs it) and ``appliance demo`` (the same on a laptop)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from appliance.cli import add_command
from appliance.config import DEVICE_CONFIG_PATH, Config, config_path, load_config
from appliance.config.checks import valid_tiles
from appliance.errors import ConfigError, ModelError, WebServerError
from appliance.inference.catalog import default_models_dir, identify_model, keep_defaults, load_catalog
from appliance.inference.labels import check_tflite
from appliance.storage.files import sha256_file

log = logging.getLogger(__name__)


def register(subparsers):
    run = add_command(subparsers, "run", run_command)
    run.add_argument("--config", type=Path, default=None,
                     help=f"the config file (default: {DEVICE_CONFIG_PATH} if it exists, else built-in defaults)")
    run.add_argument("--once", action="store_true", help="replay camera: one pass over the folder, then exit")

    demo = add_command(subparsers, "demo", demo_command)
    demo.add_argument("--images", type=Path, default=os.environ.get("APPLIANCE_DEMO_IMAGES"),
                      help="folder of photos to replay (default: $APPLIANCE_DEMO_IMAGES)")
    demo.add_argument("--model", type=Path, default=None,
                      help="model file (default: the catalog's default model in the models folder)")
    demo.add_argument("--data", type=Path, default=None, help="where kept images go (default: a fresh temp folder)")
    demo.add_argument("--fps", type=float, default=2.0, help="replay frame rate (default: 2; 0 = as fast as possible)")
    demo.add_argument("--once", action="store_true", help="one pass over the folder, drain, exit")
    demo.add_argument("--config", type=Path, default=None, help="a config file to start from (camera, model and "
                      "data settings are then overridden by the options above)")
    demo.add_argument("--port", type=int, default=8080, help="port of the review page on 127.0.0.1 (default: 8080)")
    demo.add_argument("--password", default=None, help="a password for the review page (default: none, read-only)")
    demo.add_argument("--no-web", action="store_true", help="do not serve the review page")
    demo.add_argument("--detector", type=Path, default=None, metavar="MODEL",
                      help="an object detector (such as ssd_mobilenet_v1_1.0_coco_quant.tflite): classify each bird it "
                           "finds on its own crop, and keep each track's best frame ([detector] in the config)")
    demo.add_argument("--tiles", default=None, metavar="COLSxROWS",
                      help="with --detector: also look at a grid of tiles of each frame, such as 4x3, for small birds")


def run_command(args) -> int:
    """Run the capture → classify → keep loop until stopped (SIGTERM or Ctrl-C).

    This is what appliance.service runs on the device. Live status goes to status.runtime_dir.

    Example:
        appliance run --config /boot/firmware/appliance.toml
    """
    path = config_path(args.config)
    config = load_config(path)
    if args.once:
        config = config.replace(camera={"replay_loop": False})
    return run_appliance(config)  # the service refuses a model the catalog does not know without keep.labels


def demo_command(args) -> int:
    """Classify a folder of photos with a real model and keep only the matches, as the Pi does.

    Replays the photos as camera frames (scaled like a camera's ISP scales its preview stream),
    classifies each with the model, keeps only what the model's keep rule matches, and writes the
    kept full-resolution JPEGs, thumbnails and a SQLite database to --data.

    Example:
        appliance demo --images ~/Pictures/birds --once
        appliance captures --data /tmp/appliance-demo-XXXX
    """
    if args.images is None:
        raise ConfigError("appliance demo", "--images", "no photo folder given",
                          "a folder of JPEG/PNG/BMP photos (or set APPLIANCE_DEMO_IMAGES)")
    config = load_config(args.config) if args.config else Config()
    model = args.model or default_models_dir() / load_catalog().default.filename
    data = args.data or Path(tempfile.mkdtemp(prefix="appliance-demo-"))
    runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"appliance-demo-{os.getpid()}"
    config = config.replace(
        camera={"backend": "replay", "replay_dir": str(args.images.resolve()), "fps": args.fps,
                "replay_loop": not args.once},
        model={"path": str(Path(model).resolve())},
        storage={"data_dir": str(data.resolve())},
        status={"runtime_dir": str(runtime)},
        web={"host": "127.0.0.1", "port": args.port, "password": args.password or ""},
        # A laptop has no GPIO: gpiozero's mock pins stand in, and the status shows what the LEDs do.
        gpio={"enabled": "on", "pin_factory": "mock", "fault_display_s": 0.0},
    )
    config = _with_detector(config, args)
    try:
        check_keep_rule(config)
    except ConfigError as e:
        if args.config:
            raise
        raise ConfigError("appliance demo", e.key, e.problem,
                          f"{e.allowed}; pass --config FILE with them in its [keep] section") from None
    print(f"appliance demo: photos {args.images}, model {model}\n"
          f"  kept images and database: {data}\n  live status: {runtime / 'status.json'}", file=sys.stderr)
    web = None
    if not args.no_web:
        from appliance.web.server import WebServer

        try:
            web = WebServer(config)
        except WebServerError as e:
            raise WebServerError(f"{e}; or pass --no-web") from None
        web.start()
        print(f"  review page: {web.url}" + ("" if args.password else " (read-only: no --password)"), file=sys.stderr)
    try:
        code = run_appliance(config)
    finally:
        if web is not None:
            web.close()
    print(f"appliance demo: done. List what was kept with:\n  appliance captures --data {data}", file=sys.stderr)
    return code


def _with_detector(config: Config, args) -> Config:
    """``config`` with the demo's --detector and --tiles; each photo is then shown for as many frames as a
    track needs to be kept (a still replayed once is a bird seen in one frame, which a track never keeps)."""
    if args.tiles and not args.detector:
        raise ConfigError("appliance demo", "--tiles", "goes with --detector", "--detector MODEL --tiles COLSxROWS")
    if not args.detector:
        return config
    detector = {"path": str(args.detector.resolve())}
    if args.tiles:
        try:
            detector["tiles"] = valid_tiles(args.tiles)
        except ValueError as e:
            raise ConfigError("appliance demo", "--tiles", str(e), "COLSxROWS such as 4x3, 2 to 16 tiles") from None
    config = config.replace(detector=detector)
    if config.camera.replay_repeat == 1:
        config = config.replace(camera={"replay_repeat": config.detector.track_min_frames})
    return config


def check_keep_rule(config: Config) -> None:
    """A ``ConfigError`` if the model is unknown to the catalog and the config gives no keep rule.

    Checked before anything starts, so no frame is kept under a rule nobody chose. A model file that
    is missing, damaged or no TFLite model at all is left to the classifier, which reports it when the
    appliance starts (on the LEDs too)."""
    path = Path(config.model.path)
    try:
        entry = identify_model(path, sha256_file(path))
        check_tflite(path)
    except (OSError, ModelError):
        return
    keep_defaults(entry, config.keep, path, config.source)


def run_appliance(config: Config) -> int:
    from appliance.service.app import Appliance  # imports the runtime and numpy: only for commands that run

    with Appliance(config) as appliance:
        def on_signal(signum, _frame):
            log.info("%s: stopping (draining the writer, closing the database)", signal.Signals(signum).name)
            appliance.stop()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            appliance.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            appliance.close()
        status = appliance.status()
    frames = status["frames"]
    log.info("stopped: %d frames, %d kept; by reason: %s", frames["seen"], frames["kept"],
             ", ".join(f"{k} {v}" for k, v in sorted(frames["by_reason"].items())) or "none")
    return 0
