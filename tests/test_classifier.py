"""The classifier on the real LiteRT runtime with the real models."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BIRD_MODEL, IMAGES, MODELS, TINY_EDGETPU_MODEL, TINY_MODEL

from appliance.cameras.replay import read_rgb, scale_like_isp
from appliance.cli import main
from appliance.config import ModelConfig
from appliance.errors import AcceleratorMissing, ModelError
from appliance.inference.classifier import Classifier
from appliance.inference.runtime import input_lut


def classify(classifier, name):
    return classifier.classify(scale_like_isp(read_rgb(IMAGES / name), classifier.input_size))


@pytest.fixture(scope="module")
def bird():
    return Classifier.open(ModelConfig(path=str(BIRD_MODEL), num_threads=2))


@pytest.mark.parametrize("name, label, low, high", [
    ("bird.bmp", "Poecile atricapillus (Black-capped Chickadee)", 0.65, 0.75),
    ("parrot.jpg", "Ara macao (Scarlet Macaw)", 0.70, 0.78),
    ("grace_hopper.bmp", "background", 0.79, 1.0),
    ("hot_dog.jpg", "background", 0.79, 1.0),
])
def test_the_bird_model_gives_the_published_top_label_and_score(bird, name, label, low, high):
    result = classify(bird, name)
    assert result.label == label
    assert low < result.score < high
    assert result.backend == "cpu" and result.inference_ms > 0


def test_scores_are_dequantized_probabilities_best_first(bird):
    result = classify(bird, "parrot.jpg")
    scores = [s for _, s in result.top_k]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert 0 <= scores[-1] and sum(scores) <= 1.01


def test_imagenet_models_read_their_embedded_labels_and_agree_on_a_photo():
    for model in ("mobilenet_v2_1.0_224_quant.tflite", "tf2_mobilenet_v2_1.0_224_ptq.tflite"):
        classifier = Classifier.open(ModelConfig(path=str(MODELS / model), num_threads=2))
        assert len(classifier.labels) == 1001 and classifier.labels[0] == "background"
        assert "hotdog" in classify(classifier, "hot_dog.jpg").label


def test_the_tiny_model_has_its_own_input_size():
    classifier = Classifier.open(ModelConfig(path=str(TINY_MODEL), num_threads=1, top_k=3))
    assert classifier.input_size == (128, 128)
    assert len(classify(classifier, "cat_720p.jpg").top_k) == 3


def test_int8_and_float_inputs_are_converted_from_the_models_own_parameters():
    float_lut = input_lut({"dtype": np.float32, "quantization": (0.0, 0)})
    assert float_lut[0] == pytest.approx(-1.0) and float_lut[255] == pytest.approx(1.0)
    int8_lut = input_lut({"dtype": np.int8, "quantization": (1 / 128, 0)})
    assert int8_lut.dtype == np.int8 and int8_lut[0] == -128 and int8_lut[255] == 127  # 128 clipped
    assert int8_lut[127] == -1 and int8_lut[128] == 1
    odd_uint8 = input_lut({"dtype": np.uint8, "quantization": (1 / 64, 100)})
    assert odd_uint8[128] == 100  # pixel 127.5 ≈ 0.0 → the zero point
    assert input_lut({"dtype": np.uint8, "quantization": (0.0078125, 128)}) is None  # raw pixels fit


def test_a_corrupt_model_is_a_clear_error_naming_the_file(tmp_path):
    corrupt = tmp_path / "broken.tflite"
    corrupt.write_bytes(BIRD_MODEL.read_bytes()[:100_000])
    with pytest.raises(ModelError, match=f"{corrupt}: not a valid TFLite model"):
        Classifier.open(ModelConfig(path=str(corrupt), labels=str(MODELS / "inat_bird_labels.txt")))
    not_a_model = tmp_path / "notes.tflite"
    not_a_model.write_text("hello")
    with pytest.raises(ModelError, match=str(not_a_model)):
        Classifier.open(ModelConfig(path=str(not_a_model), labels=str(MODELS / "inat_bird_labels.txt")))


def test_a_missing_model_file_says_how_to_get_one(tmp_path):
    with pytest.raises(ModelError, match="appliance models fetch"):
        Classifier.open(ModelConfig(path=str(tmp_path / "none.tflite")))


def test_the_wrong_labels_file_is_caught(tmp_path):
    with pytest.raises(ModelError, match="965 outputs but its labels list has 1001"):
        Classifier.open(ModelConfig(path=str(BIRD_MODEL), labels=str(MODELS / "imagenet_labels.txt")))


def test_an_edge_tpu_model_on_the_cpu_says_what_to_do_instead():
    with pytest.raises(ModelError, match="compiled for the Coral Edge TPU"):
        Classifier.open(ModelConfig(path=str(TINY_EDGETPU_MODEL)))


# This machine has no Coral and no libedgetpu: the real load_delegate fails, as on a Pi without one.

def test_a_missing_coral_falls_back_to_the_cpu_loudly_when_so_configured(tmp_path, caplog):
    model = tmp_path / TINY_MODEL.name
    model.write_bytes(TINY_MODEL.read_bytes())
    (tmp_path / TINY_EDGETPU_MODEL.name).write_bytes(TINY_EDGETPU_MODEL.read_bytes())
    classifier = Classifier.open(ModelConfig(path=str(model), accelerator="coral"))
    assert classifier.backend == "cpu" and classifier.accelerator.is_degraded
    assert "libedgetpu.so.1" in classifier.accelerator.problem
    assert any(r.levelname == "ERROR" and "FALLING BACK TO THE CPU" in r.message for r in caplog.records)
    assert classify(classifier, "cat_720p.jpg").backend == "cpu"


def test_a_missing_coral_stops_the_appliance_when_so_configured(tmp_path):
    model = tmp_path / TINY_MODEL.name
    model.write_bytes(TINY_MODEL.read_bytes())
    (tmp_path / TINY_EDGETPU_MODEL.name).write_bytes(TINY_EDGETPU_MODEL.read_bytes())
    with pytest.raises(AcceleratorMissing, match="on_accelerator_missing"):
        Classifier.open(ModelConfig(path=str(model), accelerator="coral", on_accelerator_missing="stop"))


def test_coral_without_an_edge_tpu_model_says_which_file_it_looked_for():
    with pytest.raises(AcceleratorMissing, match="no Edge TPU model at .*mobilenet_v2_1.0_224_inat_bird_quant_edgetpu"):
        Classifier.open(ModelConfig(path=str(BIRD_MODEL), accelerator="coral", on_accelerator_missing="stop"))


def test_auto_uses_the_cpu_quietly_when_there_is_no_coral(caplog):
    classifier = Classifier.open(ModelConfig(path=str(TINY_MODEL), accelerator="auto"))
    assert classifier.backend == "cpu" and not classifier.accelerator.is_degraded
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]


def test_classify_command_prints_top_k_per_image(capsys):
    assert main(["classify", "--model", str(BIRD_MODEL), "--top-k", "2",
                 str(IMAGES / "parrot.jpg"), str(IMAGES / "bird.bmp")]) == 0
    out = capsys.readouterr().out
    assert "Ara macao (Scarlet Macaw)" in out and "Poecile atricapillus" in out
    assert out.count("\n  ") == 4


def test_classify_command_reports_an_unreadable_image_and_fails(capsys):
    assert main(["classify", "--model", str(TINY_MODEL), str(IMAGES / "COPYRIGHT")]) == 2
    assert "not a readable image" in capsys.readouterr().out
