"""Small birds through the real loop: the composites of test_tiled_detection, replayed by the real Appliance.

Each composite (a bird photo pasted 40 %, 25 % or 15 % of the width into a non-bird photo scaled up to a
1600 x 1200 camera frame) is a JPEG file in a replay folder, shown for three frames (``camera.replay_repeat``:
a track needs ``detector.track_min_frames`` of them). The Appliance runs it to the end twice: with the
detector stage (the real SSD on 4x3 tiles and the whole frame, score >= 0.75, the real bird model on each
box's crop) and on the whole frame alone (no ``[detector]``, each composite shown once); then the store says
what was kept. Two-stage keeps most birds down to 15 % with the right species and nothing off them, where the
whole frame keeps few below 40 % (some of those the wrong species); the non-bird photos alone keep nothing.
A bird crossing the frame is one event and one keep; two birds, two.

CI runs a subset: two places and two scenes (8 composites a size), every scene alone (about 30 s).
``.venv/bin/python tests/test_two_stage_composites.py`` runs every composite (48 a size, about 2 minutes)
and prints the table docs/models.md quotes.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import BIRD_MODEL, IMAGES
from PIL import Image
from test_tiled_detection import FRAME, IS_HIT, MIN_SCORE, PLACES, SCENES, SHARES, SPECIES, SSD, composite, frame_of

from appliance.cameras.convert import area_average
from appliance.cameras.replay import ReplayCamera
from appliance.config import Config
from appliance.pipeline.detections import Box, iou
from appliance.service.app import Appliance
from appliance.service.status import read_status
from appliance.storage.store import Store

COCO_LABELS = SSD.parent / "coco_labels.txt"
REPEAT = 3  # frames each composite is shown for: the detector's default track_min_frames
TWO_STAGE = {"path": str(SSD), "labels": str(COCO_LABELS), "targets": ["bird"], "min_score": MIN_SCORE,
             "tiles": "4x3"}
CI_PLACES = (PLACES[1], PLACES[3])  # the centre, and left of it and lower
CI_SCENES = ("grace_hopper.bmp", "hot_dog.jpg")


def config_for(images: Path, workdir: Path, detector: dict | None = None, repeat: int = REPEAT) -> Config:
    """A replay run of ``images`` to its end, its data and status in ``workdir``; the detector stage with
    ``detector`` (keys of ``[detector]``), else the whole frame. A function, not conftest's fixture, since
    ``__main__`` runs it too."""
    return Config().replace(
        camera={"backend": "replay", "replay_dir": str(images), "fps": 0.0, "replay_loop": False,
                "replay_repeat": repeat, "still_size": FRAME},
        model={"path": str(BIRD_MODEL), "num_threads": 2},
        detector=detector or {},
        storage={"data_dir": str(workdir / "data"), "min_free_bytes": 0},
        status={"runtime_dir": str(workdir / "run"), "interval_s": 0.1})


def write_composites(folder: Path, places=PLACES, scenes=SCENES) -> dict[str, tuple[str, float, Box]]:
    """Every composite of a bird, a size, a scene and a place, as a JPEG in ``folder``; by file name, its
    bird, its width share and the box it was pasted into."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for bird_name in SPECIES:
        for share in SHARES:
            for scene_name in scenes:
                for place in places:
                    image, pasted = composite(bird_name, scene_name, share, place)
                    name = (f"{round(share * 100):02d}_{Path(bird_name).stem}_{Path(scene_name).stem}_"
                            f"{PLACES.index(place)}.jpg")
                    Image.fromarray(image).save(folder / name, quality=95)
                    made[name] = (bird_name, share, pasted)
    return made


def write_scenes(folder: Path) -> None:
    """The non-bird photos alone, scaled up to the camera's frame as in the composites."""
    folder.mkdir(parents=True, exist_ok=True)
    for scene_name in SCENES:
        frame_of(scene_name).save(folder / f"{Path(scene_name).stem}.jpg", quality=95)


def run(config: Config, camera=None) -> tuple[list[dict], dict]:
    """Run the Appliance on ``config`` to the camera's end; the rows it kept (each with ``has_crop``) and
    its status."""
    with Appliance(config, camera=camera) as appliance:
        appliance.run()
    store = Store(config.storage.data_dir)
    rows = [dict(row, has_crop=store.has_crop(row["id"])) for row in store.rows()]
    store.close()
    return rows, read_status(config.status.runtime_dir)


def tally(rows: list[dict], composites: dict) -> dict[float, Counter]:
    """Counts by width share. ``kept`` and ``right``: composites with a keep, and with a keep naming its bird's
    species; ``wrong``: with a keep of the bird naming another; ``keeps``: rows; ``off``: keeps whose box does
    not touch the pasted photo (false keeps; a whole-frame keep has no box)."""
    counts = {share: Counter(composites=0) for share in SHARES}
    for bird_name, share, _ in composites.values():
        counts[share]["composites"] += 1
    seen: dict[str, set] = {}
    for row in rows:
        bird_name, share, pasted = composites[row["source"]]
        counts[share]["keeps"] += 1
        if row["box"] is not None and iou(Box(*json.loads(row["box"])), pasted) == 0:
            counts[share]["off"] += 1
            continue
        seen.setdefault(row["source"], set()).add(row["label"] == SPECIES[bird_name])
    for source, verdicts in seen.items():
        share = composites[source][1]
        counts[share]["kept"] += 1
        counts[share]["right"] += True in verdicts
        counts[share]["wrong"] += False in verdicts
    return counts


def measure(workdir: Path, places=PLACES, scenes=SCENES) -> dict:
    """Both paths on the same composites of ``places`` and ``scenes``, and on every scene alone."""
    composites = write_composites(workdir / "composites", places, scenes)
    write_scenes(workdir / "scenes")
    two_stage_rows, status = run(config_for(workdir / "composites", workdir / "two-stage", TWO_STAGE))
    whole_rows, _ = run(config_for(workdir / "composites", workdir / "whole", repeat=1))
    alone_rows, _ = run(config_for(workdir / "scenes", workdir / "alone", TWO_STAGE))
    whole_alone_rows, _ = run(config_for(workdir / "scenes", workdir / "whole-alone", repeat=1))
    return {"two_stage": tally(two_stage_rows, composites), "whole": tally(whole_rows, composites),
            "two_stage_rows": two_stage_rows, "status": status, "alone": alone_rows, "whole_alone": whole_alone_rows}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    return measure(tmp_path_factory.mktemp("composites"), CI_PLACES, CI_SCENES)


def test_two_stage_keeps_the_birds_down_to_15_percent_with_their_species_where_the_whole_frame_keeps_few(measured):
    # 8 composites a size: 2 birds, 2 places, 2 scenes. Measured: two-stage 7, 8, 7 with the right species;
    # the whole frame 8 (all right), 2 (one a Carolina Chickadee) and 0.
    two_stage, whole = measured["two_stage"], measured["whole"]
    for share, at_least in ((0.4, 6), (0.25, 7), (0.15, 6)):
        assert two_stage[share]["right"] >= at_least, share
        assert two_stage[share]["wrong"] == 0, share
    assert whole[0.4]["right"] >= 6  # the comparison is fair: the whole frame keeps the big birds
    assert whole[0.25]["kept"] <= 3 and whole[0.15]["kept"] <= 1


def test_two_stage_keeps_each_bird_once_and_nothing_off_the_birds(measured):
    for share, counts in measured["two_stage"].items():
        assert counts["off"] == 0, share
        assert counts["keeps"] == counts["kept"], share  # one track a composite, one keep a track


def test_each_two_stage_keep_has_its_box_event_detector_and_crop(measured):
    rows = measured["two_stage_rows"]
    assert rows and len({row["event_id"] for row in rows}) == len(rows)
    for row in rows:
        assert row["detector_label"] == "bird" and row["detector_score"] >= MIN_SCORE
        assert row["detector_name"] == "coco-ssd"  # the catalog's name for the SSD
        assert row["event_frame"] == REPEAT - 1 and row["has_crop"]  # kept once the track has its 3 frames
    assert measured["status"]["detector"]["detector_inferences"] == 13


def test_the_non_bird_photos_alone_keep_nothing_either_way(measured):
    assert [(row["source"], row["label"]) for row in measured["alone"] + measured["whole_alone"]] == []


# -- birds crossing the frame: one track, one event, one keep each -----------------------------------------

CROSSING_FRAMES = 8
CROSSING_SCENE = "grace_hopper.bmp"


def crossing(birds) -> tuple[ReplayCamera, list[list[Box]]]:
    """A replay of ``CROSSING_FRAMES`` frames of one source, ``birds`` (bird name, row, first and last x of
    its centre, relative to the frame) pasted 25 % of the width wide, each moving a step a frame; with the
    boxes each frame's birds were pasted into."""
    frames, pasted_boxes = [], []
    for step in range(CROSSING_FRAMES):
        image, boxes = None, []
        for bird_name, y, first_x, last_x in birds:
            x = first_x + (last_x - first_x) * step / (CROSSING_FRAMES - 1)
            pasted_image, pasted = composite(bird_name, CROSSING_SCENE, 0.25, (x, y))
            if image is None:
                image = pasted_image.copy()
            else:  # this bird's pixels into the first one's frame
                rows = slice(round(pasted.top * FRAME[1]), round(pasted.bottom * FRAME[1]))
                cols = slice(round(pasted.left * FRAME[0]), round(pasted.right * FRAME[0]))
                image[rows, cols] = pasted_image[rows, cols]
            boxes.append(pasted)
        frames.append((area_average(image, (300, 300)), image, "crossing"))
        pasted_boxes.append(boxes)
    return ReplayCamera.from_arrays(frames, (300, 300), loop=False), pasted_boxes


@pytest.mark.parametrize("birds", [
    [("parrot.jpg", 0.5, 0.2, 0.8)],
    [("bird.bmp", 0.25, 0.15, 0.6), ("parrot.jpg", 0.7, 0.85, 0.4)],  # one above the other, crossing ways
], ids=["one bird", "two birds"])
def test_each_bird_crossing_the_frame_is_one_event_and_one_keep_of_its_species_from_its_third_frame(tmp_path, birds):
    camera, pasted_boxes = crossing(birds)
    rows, status = run(config_for(IMAGES, tmp_path, TWO_STAGE, repeat=1), camera)
    assert status["frames"]["seen"] == CROSSING_FRAMES
    assert status["frames"]["by_reason"].get("track-unconfirmed") == 2  # frames 0 and 1: a track needs 3
    assert sorted(row["label"] for row in rows) == sorted(SPECIES[bird_name] for bird_name, *_ in birds)
    assert len({row["event_id"] for row in rows}) == len(birds)
    for row in rows:  # each bird's track starts on the first frame: its event_frame is the frame's number
        bird = [SPECIES[bird_name] for bird_name, *_ in birds].index(row["label"])
        assert row["event_frame"] >= 2 and row["has_crop"]
        assert iou(Box(*json.loads(row["box"])), pasted_boxes[row["event_frame"]][bird]) >= IS_HIT


def table(result) -> str:
    """The figures, as a Markdown table."""
    rows = ["| bird's width | composites | whole frame: kept (right species) | two-stage: right species | "
            "wrong species | false keeps | keeps |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for share in SHARES:
        w, t = result["whole"][share], result["two_stage"][share]
        rows.append(f"| {share:.0%} | {t['composites']} | {w['kept']} ({w['right']}) | {t['right']} | {t['wrong']} "
                    f"| {t['off']} | {t['keeps']} |")
    rows.append(f"| non-bird photos alone | {len(SCENES)} | {len(result['whole_alone'])} | | | "
                f"{len(result['alone'])} | {len(result['alone'])} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import time

    started_s = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:
        result = measure(Path(workdir))
    print(f"{FRAME[0]} x {FRAME[1]} composites as JPEG, each shown {REPEAT} frames; two-stage: "
          f"{TWO_STAGE['tiles']} tiles and the whole frame, detector score >= {MIN_SCORE}; "
          f"{time.monotonic() - started_s:.0f} s")
    print(table(result))
