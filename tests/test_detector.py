"""The detector on the real LiteRT runtime with the real SSD and photos: boxes, filters, detect → crop → classify,
the wrong-model errors both ways, and `appliance classify --detector` end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import BIRD_MODEL, IMAGES, REPO, SHARED, TINY_MODEL
from PIL import Image

from appliance.cameras.convert import area_average
from appliance.cameras.replay import read_rgb
from appliance.cli import main
from appliance.config import ModelConfig
from appliance.errors import ModelError
from appliance.inference.classifier import Classifier
from appliance.inference.detector import Detector, classes_and_scores, detection_outputs, not_a_detector
from appliance.pipeline.detections import crop_square

TF = SHARED / "models" / "tf"
SSD = TF / "ssd_mobilenet_v1_1.0_coco_quant.tflite"
COCO_LABELS = TF / "coco_labels.txt"
CHICKADEE = "Poecile atricapillus (Black-capped Chickadee)"
MACAW = "Ara macao (Scarlet Macaw)"
PHOTOS = sorted(p.name for p in IMAGES.iterdir() if p.name != "COPYRIGHT")


def open_ssd(labels=COCO_LABELS, **filters):
    return Detector.open(ModelConfig(path=str(SSD), labels=str(labels), num_threads=2), **filters)


@pytest.fixture(scope="module")
def detector():
    return open_ssd(min_score=0.4)


@pytest.fixture(scope="module")
def bird():
    return Classifier.open(ModelConfig(path=str(BIRD_MODEL), num_threads=2))


def photo(name):
    return np.asarray(read_rgb(IMAGES / name))


def on_crop(classifier, image, detection):
    return classifier.classify(area_average(crop_square(image, detection.box), classifier.input_size))


def whole_frame(classifier, image):
    return classifier.classify(area_average(image, classifier.input_size))


# --- what the detector says about the shared photos (../shared/README.md) ------------------------------

@pytest.mark.parametrize("name, label, label_id, published", [
    ("bird.bmp", "bird", 16, 0.77),
    ("parrot.jpg", "bird", 16, 0.78),
    ("cat_720p.jpg", "cat", 17, 0.72),
    ("face.jpg", "person", 1, 0.7),
    ("grace_hopper.bmp", "person", 1, 0.7),
    ("kite_and_cold.jpg", "kite", 38, 0.76),
    ("hot_dog.jpg", "pizza", 59, 0.70),
    ("dragonfly.bmp", "zebra", 24, 0.57),  # COCO has no insect
])
def test_the_best_detection_per_photo_is_the_published_one(detector, name, label, label_id, published):
    result = detector.detect(photo(name))
    best = result.detections[0]
    assert (best.label, best.label_id) == (label, label_id)
    assert abs(best.score - published) < 0.05
    assert [d.score for d in result.detections] == sorted((d.score for d in result.detections), reverse=True)
    assert result.backend == "cpu" and result.inference_ms > 0


def test_boxes_are_relative_to_the_frame_whatever_its_size(detector):
    image = photo("bird.bmp")
    box = detector.detect(image).detections[0].box
    assert 0 <= box.left < box.right <= 1 and 0 <= box.top < box.bottom <= 1
    assert (box.right - box.left) * (box.bottom - box.top) > 0.5  # the chickadee fills the photo
    twice = np.asarray(Image.fromarray(image).resize((image.shape[1] * 2, image.shape[0] * 2), Image.Resampling.BOX))
    again = detector.detect(twice).detections[0].box
    assert all(abs(a - b) < 0.02 for a, b in zip(vars(box).values(), vars(again).values()))


def test_targets_and_the_minimum_score_keep_only_the_birds_of_the_bird_photos():
    birds = open_ssd(targets=("bird",), min_score=0.5)
    found = {name: birds.detect(photo(name)).detections for name in PHOTOS}
    assert {name for name, detections in found.items() if detections} == {"bird.bmp", "parrot.jpg"}
    assert all(d.label == "bird" and d.score >= 0.5 for detections in found.values() for d in detections)


def test_a_target_that_is_not_a_label_is_a_clear_error():
    with pytest.raises(ModelError, match=r"ssd_mobilenet_v1_1.0_coco_quant.tflite: target 'birds' is not one of the "
                                         r"detector's 80 labels \(person, bicycle, "):
        open_ssd(targets=("birds",))


def test_a_labels_file_numbered_from_zero_by_class_output_names_the_same_classes(tmp_path):
    """Coral's coco_labels.txt reads `0 person`, where ../shared's reads `1 person` (COCO's ids)."""
    by_id = COCO_LABELS.read_text().splitlines()
    names = {int(line.split(" ", 1)[0]): line.split(" ", 1)[1] for line in by_id}
    from_zero = tmp_path / "coral_coco_labels.txt"
    from_zero.write_text("".join(f"{c}  {names.get(c + 1, 'n/a')}\n" for c in range(90)))
    best = open_ssd(labels=from_zero).detect(photo("bird.bmp")).detections[0]
    assert (best.label, best.label_id) == ("bird", 16)


def test_the_catalogs_labels_file_beside_the_model_is_read_and_its_absence_says_how_to_fetch_it(tmp_path):
    beside = open_ssd(labels="")  # ../shared/models/tf holds coco_labels.txt beside the model
    assert beside.detect(photo("parrot.jpg")).detections[0].label == "bird"
    alone = tmp_path / SSD.name
    alone.write_bytes(SSD.read_bytes())
    with pytest.raises(ModelError, match=rf"^{alone}: its labels file {tmp_path / 'coco_labels.txt'} is missing: "
                                         rf"`appliance models fetch coco-ssd --dir {tmp_path}` installs it"):
        Detector.open(ModelConfig(path=str(alone)))


# --- detect → crop → classify ---------------------------------------------------------------------------

def test_the_bird_model_is_surer_of_the_chickadee_on_its_crop_than_on_the_whole_frame(detector, bird):
    image = photo("bird.bmp")
    whole = whole_frame(bird, image)
    crops = [on_crop(bird, image, d) for d in detector.detect(image).detections if d.label == "bird"]
    assert whole.label == CHICKADEE and 0.65 < whole.score < 0.75  # as published: 0.70
    assert crops and all(c.label == CHICKADEE for c in crops)
    assert crops[0].score > 0.85 and crops[0].score > whole.score + 0.1  # measured: 0.91


def test_the_macaw_that_fills_a_portrait_photo_is_named_on_its_padded_crop_too(detector, bird):
    """The box is nearly the whole 512 x 929 photo: its square cannot grow sideways and is padded with
    black, so the crop scores no better than the whole frame (0.66 against 0.74), but names the macaw."""
    image = photo("parrot.jpg")
    (box,) = [d for d in detector.detect(image).detections if d.label == "bird"]
    result = on_crop(bird, image, box)
    assert result.label == MACAW and result.score > 0.55


def composite(bird_name, scene_name, size, width_share, corner):
    """``bird_name`` pasted ``width_share`` of the width wide into ``scene_name`` scaled up to ``size``."""
    scene = read_rgb(IMAGES / scene_name).resize(size, Image.Resampling.BICUBIC)
    bird = read_rgb(IMAGES / bird_name)
    width = int(size[0] * width_share)
    height = int(bird.height * width / bird.width)
    scene.paste(bird.resize((width, height), Image.Resampling.BOX), corner(size, (width, height)))
    return np.asarray(scene)


def near_bottom_right(size, bird):
    return size[0] - bird[0] - 100, size[1] - bird[1] - 100


def near_top_left(size, bird):
    return size[0] // 10, size[1] // 10


def test_a_bird_in_a_larger_scene_is_named_surely_only_on_its_crop(detector, bird):
    image = composite("bird.bmp", "grace_hopper.bmp", (1600, 1200), 0.4, near_bottom_right)
    whole = whole_frame(bird, image)
    best = detector.detect(image).detections[0]
    crop = on_crop(bird, image, best)
    assert whole.score < 0.5  # measured: the chickadee at 0.41, not kept by the bird model's rule
    assert best.label == "bird" and best.score > 0.6  # measured: 0.73
    assert crop.label == CHICKADEE and crop.score > 0.7  # measured: 0.82


def test_a_bird_a_quarter_of_the_width_is_background_on_the_whole_frame_but_named_on_its_crop(detector, bird):
    image = composite("parrot.jpg", "cat_720p.jpg", (1280, 960), 0.25, near_top_left)
    assert whole_frame(bird, image).label == "background"  # measured: 0.84
    best = next(d for d in detector.detect(image).detections if d.label == "bird")
    assert best.score > 0.55  # measured: 0.64 (the cat scores higher)
    crop = on_crop(bird, image, best)
    assert crop.label == MACAW and crop.score > 0.5  # measured: 0.61


# --- the wrong model in the wrong place ------------------------------------------------------------------

def test_a_classifier_given_as_the_detector_is_one_clear_error():
    with pytest.raises(ModelError, match=rf"^{TINY_MODEL}: is an image classifier \(one output: \[1, 1001\] class "
                                         r"scores\), not an object detector: give it as the classifier"):
        Detector.open(ModelConfig(path=str(TINY_MODEL)))


def test_a_detector_given_as_the_classifier_is_one_clear_error_before_its_labels_are_looked_for():
    with pytest.raises(ModelError, match=rf"^{SSD}: is an object detector \(TFLite_Detection_PostProcess outputs: "
                                         r"boxes, classes, scores, count\), not an image classifier: give it as the "
                                         r"detector \(--detector\)"):
        Classifier.open(ModelConfig(path=str(SSD)))


def test_a_detector_without_the_post_process_outputs_is_refused_naming_its_outputs():
    """A raw SSD export (box encodings and class logits per anchor, no TFLite_Detection_PostProcess): no such
    model is in ../shared, so its output details are given as the runtime reports them."""
    raw = [{"name": "raw_outputs/box_encodings", "index": 1, "shape": np.array([1, 1917, 4])},
           {"name": "raw_outputs/class_predictions", "index": 2, "shape": np.array([1, 1917, 91])}]
    assert detection_outputs(raw) is None
    error = not_a_detector("ssd_raw.tflite", raw)
    assert str(error).startswith("ssd_raw.tflite: has the outputs [1, 1917, 4], [1, 1917, 91], not the four of "
                                 "TFLite_Detection_PostProcess (boxes [1,N,4], classes [1,N], scores [1,N], count [1])")


# --- which output is which -------------------------------------------------------------------------------

def ssd_output_details():
    return Detector.open(ModelConfig(path=str(SSD), labels=str(COCO_LABELS))).interpreter.get_output_details()


def test_the_outputs_are_told_apart_by_shape_and_name_in_any_order():
    details = ssd_output_details()
    for order in (details, details[::-1], [details[2], details[0], details[3], details[1]]):
        outputs = detection_outputs(order)
        assert outputs.is_settled
        assert [outputs.boxes["name"], outputs.classes["name"], outputs.scores["name"], outputs.count["name"]] == [
            "TFLite_Detection_PostProcess", "TFLite_Detection_PostProcess:1", "TFLite_Detection_PostProcess:2",
            "TFLite_Detection_PostProcess:3"]


def test_outputs_whose_names_do_not_say_are_told_apart_by_their_values():
    """Names as other exporters give them (TensorFlow 2's StatefulPartitionedCall:N, in another order)."""
    details = [{"name": f"StatefulPartitionedCall:{n}", "index": n, "shape": np.array(shape)}
               for n, shape in ((1, [1, 10]), (3, [1, 10, 4]), (0, [1]), (2, [1, 10]))]
    outputs = detection_outputs(details)
    assert not outputs.is_settled and outputs.boxes["index"] == 3 and outputs.count["index"] == 0
    classes, scores = np.array([15.0, 0.0, 37.0]), np.array([0.77, 0.6, 0.41])
    for first, second in ((scores, classes), (classes, scores)):
        found_classes, found_scores = classes_and_scores(first, second)
        assert found_classes is classes and found_scores is scores
    none, nothing = np.array([]), np.array([])
    assert classes_and_scores(none, nothing)[0] is none  # no detections: nothing to tell, the first is taken


# --- appliance classify --detector --------------------------------------------------------------------------

def test_classify_with_a_detector_prints_each_bird_box_and_the_species_on_its_crop(capsys):
    assert main(["classify", "--detector", str(SSD), "--detector-labels", str(COCO_LABELS), "--targets", "bird",
                 "--min-score", "0.5", "--top-k", "1", "--model", str(BIRD_MODEL),
                 str(IMAGES / "bird.bmp"), str(IMAGES / "cat_720p.jpg")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{IMAGES / 'bird.bmp'}  (cpu, detector ") and "2 box(es) with a score >= 0.5" in out[0]
    assert out[1].startswith("  box (0.0") and "bird 0.77" in out[1]
    assert out[2].strip().endswith(CHICKADEE) and float(out[2].split()[0]) > 0.85
    assert out[-1].startswith(f"{IMAGES / 'cat_720p.jpg'}  (cpu, detector ") and "0 box(es)" in out[-1]


def test_classify_with_a_detector_as_json_in_a_child_process(cli_env):
    result = subprocess.run([sys.executable, "-m", "appliance", "classify", "--json", "--detector", str(SSD),
                             "--targets", "bird", "--model", str(BIRD_MODEL), str(IMAGES / "parrot.jpg")],
                            env=cli_env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    record = json.loads(line)
    (box,) = record["boxes"]
    assert record["image"] == str(IMAGES / "parrot.jpg") and record["backend"] == "cpu"
    assert (box["label"], box["label_id"]) == ("bird", 16) and box["score"] > 0.7
    assert set(box["box"]) == {"left", "top", "right", "bottom"} and box["box"]["left"] < box["box"]["right"]
    assert box["top_k"][0][0] == MACAW and len(box["top_k"]) == 5


def test_classify_without_a_detector_refuses_the_detectors_options(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["classify", "--targets", "bird", "--model", str(BIRD_MODEL), str(IMAGES / "bird.bmp")])
    assert exited.value.code == 2
    assert "--detector-labels, --targets, --min-score and --tiles go with --detector" in capsys.readouterr().err


def test_classify_says_which_model_is_in_the_wrong_place(capsys):
    assert main(["classify", "--detector", str(TINY_MODEL), "--model", str(BIRD_MODEL), str(IMAGES / "bird.bmp")]) == 2
    assert "is an image classifier (one output: [1, 1001] class scores), not an object detector" in \
        capsys.readouterr().err
    assert main(["classify", "--model", str(SSD), str(IMAGES / "bird.bmp")]) == 2
    assert "is an object detector (TFLite_Detection_PostProcess outputs" in capsys.readouterr().err
