"""Small birds on tiles, on the real SSD, the real bird model and the real photos.

Each bird photo is pasted at 40 %, 25 % and 15 % of the width, at four places, into each non-bird photo
scaled up to a 1600 x 1200 camera frame: 48 composites a size. The whole frame (one inference) finds none
of the birds below 40 %; a 4x3 grid of tiles plus the whole frame (13 inferences) finds them down to 15 %,
and the bird model names the species on their crops. No bird box on the non-bird photos alone.

`.venv/bin/python tests/test_tiled_detection.py [MIN_SCORE]` prints the table of figures.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache

import numpy as np
import pytest
from conftest import BIRD_MODEL, IMAGES, SHARED
from PIL import Image

from appliance.cameras.convert import area_average
from appliance.cameras.replay import read_rgb
from appliance.cli import main
from appliance.config import ModelConfig
from appliance.inference.classifier import Classifier
from appliance.inference.detector import Detector
from appliance.pipeline.detections import Box, TileGrid, crop_square, iou

SSD = SHARED / "models" / "tf" / "ssd_mobilenet_v1_1.0_coco_quant.tflite"
FRAME = (1600, 1200)  # a 4:3 camera frame (the Raspberry Pi HQ camera's and the v2's aspect ratio)
GRID = TileGrid(4, 3)  # the default overlap, 0.15 of the frame, and the whole frame too
# On the non-bird photos alone, the SSD's best "bird" is the dragonfly (a flying insect: COCO has no insect class):
# 0.57 on the whole frame, up to 0.70 on tiles (2x2 to 4x4 grids, overlaps 0.1 to 0.2, 1600 x 1200 and 1920 x
# 1080 frames; 0.72 on square tiles), 0.70 on this grid; every other photo stays at or below 0.5. 0.75 is above all.
MIN_SCORE = 0.75
SPECIES = {"bird.bmp": "Poecile atricapillus (Black-capped Chickadee)", "parrot.jpg": "Ara macao (Scarlet Macaw)"}
SCENES = sorted(p.name for p in IMAGES.iterdir() if p.suffix in (".bmp", ".jpg") and p.name not in SPECIES)
SHARES = (0.4, 0.25, 0.15)
PLACES = ((0.15, 0.2), (0.5, 0.5), (0.8, 0.75), (0.33, 0.6))  # the bird's centre, relative to the frame
IS_HIT = 0.3  # a box overlapping the pasted photo by this IoU is the bird: a photo holds a bird and its background


@lru_cache(maxsize=None)
def frame_of(scene_name) -> Image.Image:
    """A non-bird photo scaled up to the camera's frame (copy it before pasting into it)."""
    return read_rgb(IMAGES / scene_name).resize(FRAME, Image.Resampling.BICUBIC)


def composite(bird_name, scene_name, width_share, place):
    """``bird_name`` pasted ``width_share`` of the frame wide, centred on ``place`` but inside the frame, into
    ``scene_name`` scaled up to the camera's frame; with the box it was pasted into."""
    scene, bird = frame_of(scene_name).copy(), read_rgb(IMAGES / bird_name)
    width = int(FRAME[0] * width_share)
    height = int(bird.height * width / bird.width)
    left = min(max(int(place[0] * FRAME[0] - width / 2), 0), FRAME[0] - width)
    top = min(max(int(place[1] * FRAME[1] - height / 2), 0), FRAME[1] - height)
    scene.paste(bird.resize((width, height), Image.Resampling.BOX), (left, top))
    pasted = Box(left / FRAME[0], top / FRAME[1], (left + width) / FRAME[0], (top + height) / FRAME[1])
    return np.asarray(scene), pasted


def open_models(min_score=MIN_SCORE):
    config = ModelConfig(path=str(SSD), labels=str(SSD.parent / "coco_labels.txt"), num_threads=2)
    return (Detector.open(config, targets=("bird",), min_score=min_score),
            Classifier.open(ModelConfig(path=str(BIRD_MODEL), num_threads=2)))


def measure(detector, classifier) -> dict:
    """Counts by width share: ``whole`` and ``tiled`` (composites whose bird is found), ``named`` (whose best
    tiled box the bird model names as the right species), ``extra`` (more tiled boxes on one bird),
    ``elsewhere`` (tiled bird boxes off the bird); and the bird boxes on the non-bird photos alone."""
    counts = {share: Counter() for share in SHARES}
    for bird_name in SPECIES:
        for share in SHARES:
            for scene_name in SCENES:
                for place in PLACES:
                    image, pasted = composite(bird_name, scene_name, share, place)
                    tally = counts[share]
                    tally["composites"] += 1
                    tally["whole"] += any(iou(d.box, pasted) >= IS_HIT for d in detector.detect(image).detections)
                    found = detector.detect(image, GRID).detections
                    hits = [d for d in found if iou(d.box, pasted) >= IS_HIT]
                    tally["tiled"] += bool(hits)
                    tally["extra"] += max(len([d for d in found if iou(d.box, pasted) > 0]) - 1, 0)
                    tally["elsewhere"] += len([d for d in found if iou(d.box, pasted) == 0])
                    if hits:
                        crop = area_average(crop_square(image, hits[0].box), classifier.input_size)
                        tally["named"] += classifier.classify(crop).label == SPECIES[bird_name]
    alone = {}
    for scene_name in SCENES:
        image = np.asarray(frame_of(scene_name))
        alone[scene_name] = (detector.detect(image).detections, detector.detect(image, GRID).detections)
    return {"by_share": counts, "alone": alone}


@pytest.fixture(scope="module")
def models():
    return open_models()


@pytest.fixture(scope="module")
def measured(models):
    return measure(*models)


def test_the_whole_frame_finds_big_birds_but_none_a_quarter_or_less_of_the_width(measured):
    counts = measured["by_share"]
    assert counts[0.4]["whole"] >= 0.5 * counts[0.4]["composites"]  # measured: 29 of 48
    assert counts[0.25]["whole"] <= 0.1 * counts[0.25]["composites"]  # measured: 0
    assert counts[0.15]["whole"] == 0


def test_tiles_find_the_birds_down_to_15_percent_of_the_width(measured):
    counts = measured["by_share"]
    for share, at_least in ((0.4, 0.65), (0.25, 0.85), (0.15, 0.6)):  # measured: 38, 48 and 36 of 48
        assert counts[share]["tiled"] >= at_least * counts[share]["composites"], share
        assert counts[share]["tiled"] >= counts[share]["whole"] + 0.5 * counts[share]["composites"] or share == 0.4


def test_the_bird_model_names_the_species_on_the_tiled_crops_of_most_small_birds(measured):
    for share, tally in measured["by_share"].items():
        assert tally["named"] >= 0.9 * tally["tiled"], share  # measured: 37 of 38, 47 of 48, 36 of 36
    assert measured["by_share"][0.15]["named"] >= 0.5 * measured["by_share"][0.15]["composites"]


def test_tiles_give_one_box_a_bird_and_none_off_the_birds(measured):
    for share, tally in measured["by_share"].items():
        assert tally["extra"] <= 0.1 * tally["composites"], share  # measured: 2, 0, 0 of 48
        assert tally["elsewhere"] == 0, share


def test_no_bird_box_on_the_non_bird_photos_alone(measured):
    assert {name: found for name, found in measured["alone"].items() if any(found)} == {}


def test_a_tiled_frame_says_what_it_cost(models):
    detector, _ = models
    image, _ = composite("parrot.jpg", "hot_dog.jpg", 0.15, (0.5, 0.5))
    whole, tiled = detector.detect(image), detector.detect(image, GRID)
    assert (whole.inferences, tiled.inferences) == (1, 13)
    assert tiled.inference_ms > 4 * whole.inference_ms
    assert [d.score for d in tiled.detections] == sorted((d.score for d in tiled.detections), reverse=True)


# --- appliance classify --tiles --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_parrot(tmp_path_factory):
    path = tmp_path_factory.mktemp("composite") / "small_parrot.png"
    image, pasted = composite("parrot.jpg", "grace_hopper.bmp", 0.15, (0.8, 0.75))
    Image.fromarray(image).save(path)
    return path, pasted


def classify(*options):
    return main(["classify", "--detector", str(SSD), "--targets", "bird", "--min-score", str(MIN_SCORE),
                 "--top-k", "1", "--model", str(BIRD_MODEL), *options])


def test_classify_with_tiles_finds_the_small_bird_the_whole_frame_misses(small_parrot, capsys):
    path, pasted = small_parrot
    assert classify(str(path)) == 0
    assert "0 box(es)" in capsys.readouterr().out
    assert classify("--tiles", "4x3", "--json", str(path)) == 0
    record = json.loads(capsys.readouterr().out)
    (box,) = record["boxes"]
    assert record["inferences"] == 13 and box["label"] == "bird" and box["top_k"][0][0] == SPECIES["parrot.jpg"]
    assert iou(Box(**box["box"]), pasted) > 0.5
    assert classify("--tiles", "4x3", str(path)) == 0
    assert "(cpu, 13 inferences, detector " in capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize("grid, problem", [
    ("3", "'3' is not a grid of tiles: give COLSxROWS, such as 3x2"),
    ("5x4", "5x4 is 20 tiles, more than 16: each costs an inference a frame"),
    ("1x1", "1x1 is the whole frame, which the detector sees without tiles"),
])
def test_classify_refuses_a_malformed_or_oversized_grid_in_one_line(grid, problem, capsys):
    with pytest.raises(SystemExit) as exited:
        classify("--tiles", grid, str(IMAGES / "bird.bmp"))
    assert exited.value.code == 2
    assert f"argument --tiles: {problem}" in capsys.readouterr().err


def test_classify_refuses_tiles_without_a_detector(capsys):
    with pytest.raises(SystemExit):
        main(["classify", "--tiles", "3x2", "--model", str(BIRD_MODEL), str(IMAGES / "bird.bmp")])
    assert "--detector-labels, --targets, --min-score and --tiles go with --detector" in capsys.readouterr().err


def table(result) -> str:
    """The figures, as a Markdown table."""
    rows = ["| bird's width | composites | whole frame finds it | tiles find it | species named on the crop | "
            "extra boxes on a bird | bird boxes off the birds |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for share, t in result["by_share"].items():
        rows.append(f"| {share:.0%} | {t['composites']} | {t['whole']} | {t['tiled']} | {t['named']} | {t['extra']} "
                    f"| {t['elsewhere']} |")
    alone = result["alone"]
    rows.append(f"| non-bird photos alone | {len(alone)} | {sum(bool(w) for w, _ in alone.values())} with a bird box | "
                f"{sum(bool(t) for _, t in alone.values())} with a bird box | | | |")
    return "\n".join(rows)


if __name__ == "__main__":  # the figures at another minimum score: tests/test_tiled_detection.py 0.6
    import sys

    min_score = float(sys.argv[1]) if len(sys.argv) > 1 else MIN_SCORE
    print(f"{FRAME[0]} x {FRAME[1]}, grid {GRID.cols}x{GRID.rows}, overlap {GRID.overlap}, min score {min_score}")
    print(table(measure(*open_models(min_score))))
