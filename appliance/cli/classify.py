"""``appliance classify``: what the model says about some images, as the loop would see them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from appliance.cli import add_command
from appliance.config import ModelConfig
from appliance.errors import CameraError


def register(subparsers):
    parser = add_command(subparsers, "classify", classify_command)
    parser.add_argument("--model", type=Path, required=True, help="a .tflite classifier")
    parser.add_argument("--labels", type=Path, default=None, help="labels file (default: embedded in the model)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--accelerator", choices=("cpu", "coral", "auto"), default="cpu")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument("--detector", type=Path, default=None, metavar="MODEL",
                        help="a .tflite object detector: classify each box it finds instead of the whole image")
    parser.add_argument("--detector-labels", type=Path, default=None, metavar="FILE",
                        help="the detector's labels file (default: the catalog's beside the model, else embedded)")
    parser.add_argument("--targets", type=_names, default=(), metavar="LABEL,…",
                        help="the detector's labels to classify, such as bird (default: every label)")
    parser.add_argument("--min-score", type=_score, default=None, metavar="S",
                        help="the lowest detection score kept, 0 to 1 (default: 0.5)")
    parser.add_argument("--tiles", type=_grid, default=None, metavar="COLSxROWS",
                        help="also run the detector on a grid of overlapping tiles of the full-resolution image, such "
                             "as 3x2 (2 to 16 tiles), to find smaller subjects: one inference a tile")
    parser.add_argument("images", type=Path, nargs="+")
    parser.set_defaults(classify_parser=parser)


def classify_command(args) -> int:
    """Print the model's top-k labels and scores for each image.

    Each image is scaled to the model's input size the way the camera's ISP scales its preview
    stream (whole field of view, area-averaged), so the scores are the ones the loop would see.

    With --detector, the detector looks at the whole image (area-averaged to its input) and each box
    of a target label is cut from the full-resolution image with a 10 % margin, squared, and
    classified: one line per box with its place (left, top, right, bottom, 0-1 of the image), the
    detector's label and score, then the classifier's top-k for that crop.

    With --tiles COLSxROWS too, the detector also looks at each of a grid of tiles of the
    full-resolution image (neighbours overlapping by 15 % of the image), and what the tiles and the
    whole image found of one subject is one box. On a 1600x1200 image, 4x3 finds birds a seventh of
    its width that the whole image misses, for one inference a tile (13 in all, with the whole
    image). Each tile is one more chance of a false box too: on the shared photos, a --min-score
    of 0.75 left none.

    Example:
        appliance classify --model mobilenet_v2_1.0_224_inat_bird_quant.tflite parrot.jpg
        appliance classify --detector ssd_mobilenet_v1_1.0_coco_quant.tflite --targets bird \\
            --model mobilenet_v2_1.0_224_inat_bird_quant.tflite bird.bmp
        appliance classify --detector ssd_mobilenet_v1_1.0_coco_quant.tflite --targets bird --tiles 4x3 \\
            --min-score 0.75 --model mobilenet_v2_1.0_224_inat_bird_quant.tflite trail_camera.jpg
    """
    if not args.detector and (args.detector_labels or args.targets or args.min_score is not None or args.tiles):
        args.classify_parser.error("--detector-labels, --targets, --min-score and --tiles go with --detector")
    from appliance.cameras.replay import read_rgb, scale_like_isp
    from appliance.inference.classifier import Classifier

    classifier = Classifier.open(ModelConfig(path=str(args.model), labels=str(args.labels or ""),
                                             top_k=args.top_k, accelerator=args.accelerator))
    detector = _open_detector(args) if args.detector else None
    failed = 0
    for path in args.images:
        try:
            image = read_rgb(path)
        except OSError as e:
            print(f"{path}: not a readable image ({e})")
            failed += 1
            continue
        if detector is not None:
            _print_boxes(path, image, detector, classifier, args.json, args.tiles)
            continue
        result = classifier.classify(scale_like_isp(image, classifier.input_size))
        if args.json:
            print(json.dumps({"image": str(path), "top_k": result.top_k, "inference_ms": round(result.inference_ms, 2),
                              "backend": result.backend}))
        else:
            print(f"{path}  ({result.backend}, {result.inference_ms:.1f} ms)")
            for label, score in result.top_k:
                print(f"  {score:6.3f}  {label}")
    if failed:
        raise CameraError(f"{failed} of {len(args.images)} images could not be read")
    return 0


def _open_detector(args):
    from appliance.inference.detector import DEFAULT_MIN_SCORE, Detector

    config = ModelConfig(path=str(args.detector), labels=str(args.detector_labels or ""), accelerator=args.accelerator)
    min_score = DEFAULT_MIN_SCORE if args.min_score is None else args.min_score
    return Detector.open(config, targets=args.targets, min_score=min_score)


def _print_boxes(path, image, detector, classifier, as_json, tiles) -> None:
    """Detect in ``image`` (on ``tiles`` too, a ``(cols, rows)`` grid, if given), then classify each box's
    square crop as the loop would see it."""
    from dataclasses import asdict

    import numpy as np

    from appliance.cameras.convert import area_average
    from appliance.pipeline.detections import TileGrid, crop_square

    main = np.asarray(image)
    found = detector.detect(main, TileGrid(*tiles) if tiles else None)
    rows = []
    for detection in found.detections:
        result = classifier.classify(area_average(crop_square(main, detection.box), classifier.input_size))
        rows.append((detection, result))
    if as_json:
        print(json.dumps({"image": str(path), "detector_ms": round(found.inference_ms, 2), "backend": found.backend,
                          "inferences": found.inferences,
                          "boxes": [{"box": {k: round(v, 4) for k, v in asdict(d.box).items()}, "label": d.label,
                                     "label_id": d.label_id, "score": d.score, "top_k": r.top_k,
                                     "inference_ms": round(r.inference_ms, 2)} for d, r in rows]}))
        return
    cost = f"{found.inferences} inferences, " if found.inferences > 1 else ""
    print(f"{path}  ({found.backend}, {cost}detector {found.inference_ms:.1f} ms, {len(rows)} box(es) with a score "
          f">= {detector.min_score:g}{', labels ' + ','.join(sorted(detector.targets)) if detector.targets else ''})")
    for detection, result in rows:
        box = detection.box
        corners = ", ".join(f"{v:.3f}" for v in (box.left, box.top, box.right, box.bottom))
        print(f"  box ({corners})  {detection.label} {detection.score:.3f}  ({result.inference_ms:.1f} ms)")
        for label, score in result.top_k:
            print(f"    {score:6.3f}  {label}")


def _names(value: str) -> tuple[str, ...]:
    """An argparse type: comma-separated label names, such as ``bird,cat``."""
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("give one or more label names, separated by commas")
    return names


def _grid(value: str) -> tuple[int, int]:
    """An argparse type: a grid of tiles, ``COLSxROWS`` such as ``3x2``."""
    from appliance.pipeline.detections import parse_grid

    try:
        return parse_grid(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _score(value: str) -> float:
    """An argparse type: a number from 0 to 1."""
    score = float(value)
    if not 0.0 <= score <= 1.0:
        raise argparse.ArgumentTypeError("must be from 0 to 1")
    return score
