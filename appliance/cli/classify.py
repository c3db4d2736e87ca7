"""``appliance classify``: what the model says about some images, as the loop would see them."""

from __future__ import annotations

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
    parser.add_argument("images", type=Path, nargs="+")


def classify_command(args) -> int:
    """Print the model's top-k labels and scores for each image.

    Each image is scaled to the model's input size the way the camera's ISP scales its preview
    stream (whole field of view, area-averaged), so the scores are the ones the loop would see.

    Example:
        appliance classify --model mobilenet_v2_1.0_224_inat_bird_quant.tflite parrot.jpg
    """
    from appliance.cameras.replay import read_rgb, scale_like_isp
    from appliance.inference.classifier import Classifier

    classifier = Classifier.open(ModelConfig(path=str(args.model), labels=str(args.labels or ""),
                                             top_k=args.top_k, accelerator=args.accelerator))
    failed = 0
    for path in args.images:
        try:
            lores = scale_like_isp(read_rgb(path), classifier.input_size)
        except OSError as e:
            print(f"{path}: not a readable image ({e})")
            failed += 1
            continue
        result = classifier.classify(lores)
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
