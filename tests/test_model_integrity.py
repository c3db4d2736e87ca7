"""A model file that is damaged, not a model at all, or unknown to the catalog, and labels files with
absurd label numbers: each is one clear error naming the file and the fix, checked at start, before a
single frame is kept under the wrong rule. Real models from ../shared, copied and damaged in tmp_path."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import BIRD_MODEL, IMAGES, MODELS, REPO, TINY_EDGETPU_MODEL, TINY_MODEL

from appliance.config import KeepConfig, ModelConfig, to_toml
from appliance.errors import ConfigError, ModelError
from appliance.inference.catalog import identify_model, keep_defaults, load_catalog
from appliance.inference.classifier import Classifier
from appliance.inference.labels import load_labels
from appliance.storage.files import sha256_file

BIRD_SHA256 = "350fcd8cf1df1560060d464595dfed8b174b05792788052896004848d9ad04f9"


def flipped_copy(source, target):
    """``source`` copied to ``target`` with one bit of its middle byte flipped: SD-card rot."""
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    return target


def demo(tmp_path, model, cli_env, *extra):
    return subprocess.run([sys.executable, "-m", "appliance", "demo", "--images", str(IMAGES), "--model", str(model),
                           "--data", str(tmp_path / "data"), "--once", "--fps", "0", "--no-web", *extra],
                          env=cli_env, capture_output=True, text=True, timeout=120, cwd=REPO)


def one_error_line(result):
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("appliance: error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0].removeprefix("appliance: error: ")


def kept_images(data):
    return sorted(p.name for p in data.rglob("*.jpg") if "thumbs" not in p.relative_to(data).parts)


# --- one flipped bit in a catalog model -------------------------------------------------------------

def test_a_catalog_model_with_one_flipped_bit_is_a_model_error_saying_it_is_damaged(tmp_path):
    model = flipped_copy(BIRD_MODEL, tmp_path / BIRD_MODEL.name)
    with pytest.raises(ModelError) as error:
        Classifier.open(ModelConfig(path=str(model), num_threads=1))
    assert str(error.value) == (
        f"{model}: sha256 {sha256_file(model)} does not match the catalog's {BIRD_SHA256} for inat-bird: the file "
        f"is damaged; copy it again or run `appliance models fetch inat-bird --dir {tmp_path}` "
        "(add --from DIR to copy from a USB stick)")


def test_the_demo_refuses_a_damaged_catalog_model_instead_of_keeping_six_photos_of_eight(tmp_path, cli_env):
    model = flipped_copy(BIRD_MODEL, tmp_path / BIRD_MODEL.name)
    result = demo(tmp_path, model, cli_env)
    line = one_error_line(result)
    assert line.startswith(f"{model}: sha256 ") and "the file is damaged" in line
    assert "model fault" in result.stderr  # the red LED's blink code says so on the device
    assert kept_images(tmp_path / "data") == []


def test_a_damaged_edge_tpu_build_is_recognised_by_its_catalog_name(tmp_path):
    tpu = flipped_copy(TINY_EDGETPU_MODEL, tmp_path / TINY_EDGETPU_MODEL.name)
    with pytest.raises(ModelError, match=r"for imagenet-tiny: the file is damaged; .*"
                                         r"`appliance models fetch imagenet-tiny --edgetpu --dir "):
        identify_model(tpu, sha256_file(tpu))


def test_intact_catalog_models_are_recognised_under_any_file_name(tmp_path):
    renamed = tmp_path / "birds.tflite"
    renamed.write_bytes(BIRD_MODEL.read_bytes())
    assert identify_model(renamed, sha256_file(renamed)).name == "inat-bird"
    assert identify_model(TINY_EDGETPU_MODEL, sha256_file(TINY_EDGETPU_MODEL)).name == "imagenet-tiny"
    classifier = Classifier.open(ModelConfig(path=str(renamed), num_threads=1))
    assert classifier.catalog_entry.name == "inat-bird" and classifier.model_sha256 == BIRD_SHA256


@pytest.mark.parametrize("model", sorted(p.name for p in MODELS.glob("*.tflite")))
def test_every_shared_model_matches_the_catalog(model):
    assert identify_model(MODELS / model, sha256_file(MODELS / model)) is not None


# --- a model the catalog does not know ------------------------------------------------------------

def test_a_model_unknown_to_the_catalog_needs_keep_labels_in_the_config(tmp_path, cli_env):
    model = flipped_copy(BIRD_MODEL, tmp_path / "my-birds.tflite")  # not the catalog's bytes, nor its name
    line = one_error_line(demo(tmp_path, model, cli_env))
    assert line.startswith("appliance demo: keep.labels: must be set: my-birds.tflite is not in the models catalog")
    assert "pass --config" in line
    assert kept_images(tmp_path / "data") == []
    config = tmp_path / "appliance.toml"
    config.write_text('[storage]\nmin_free_bytes = 0\n')
    line = one_error_line(demo(tmp_path, model, cli_env, "--config", str(config)))
    assert line.startswith(f"{config}: keep.labels: must be set: my-birds.tflite is not in the models catalog")


def test_the_device_refuses_to_start_an_unknown_model_without_keep_labels(tmp_path, make_config, cli_env):
    model = flipped_copy(BIRD_MODEL, tmp_path / "my-birds.tflite")
    config = tmp_path / "appliance.toml"
    config.write_text(to_toml(make_config(model=model)))
    result = subprocess.run([sys.executable, "-m", "appliance", "run", "--config", str(config)],
                            env=cli_env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert one_error_line(result).startswith(f"{config}: keep.labels: must be set: my-birds.tflite is not in the "
                                             "models catalog")
    assert not (tmp_path / "data").exists()  # refused before anything started


def test_a_model_unknown_to_the_catalog_runs_under_the_keep_rule_the_config_gives(tmp_path, cli_env):
    model = flipped_copy(BIRD_MODEL, tmp_path / "my-birds.tflite")
    config = tmp_path / "appliance.toml"
    config.write_text('[keep]\nlabels = ["*"]\nignore = ["background"]\nmin_score = 0.5\n'
                      '[storage]\nmin_free_bytes = 0\n')
    result = demo(tmp_path, model, cli_env, "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert len(kept_images(tmp_path / "data")) == 2  # the chickadee and the macaw


def test_the_keep_rule_comes_from_the_catalog_for_a_catalog_model():
    entry = load_catalog().get("inat-bird")
    assert keep_defaults(entry, KeepConfig(), BIRD_MODEL, "x.toml") == entry.keep
    assert keep_defaults(entry, KeepConfig(labels=("*Owl*",)), BIRD_MODEL, "x.toml") == entry.keep  # for ignore, min_score
    assert keep_defaults(None, KeepConfig(labels=("*",)), "/m/my.tflite", "x.toml") is None
    with pytest.raises(ConfigError, match=r"^x\.toml: keep\.labels: must be set: my\.tflite is not in the models catalog"):
        keep_defaults(None, KeepConfig(), "/m/my.tflite", "x.toml")


# --- not a TFLite model at all --------------------------------------------------------------------

def test_a_truncated_model_is_not_a_valid_tflite_model_rather_than_one_without_labels(tmp_path):
    truncated = tmp_path / "broken.tflite"
    truncated.write_bytes(TINY_MODEL.read_bytes()[:100_000])
    with pytest.raises(ModelError) as error:
        Classifier.open(ModelConfig(path=str(truncated)))
    message = str(error.value)
    assert message.startswith(f"{truncated}: not a valid TFLite model") and "labels" not in message
    assert "copy it again" in message


def test_a_file_that_is_no_model_at_all_says_so(tmp_path):
    garbage = tmp_path / "notes.tflite"
    garbage.write_text("hello, this is not a model\n" * 20)
    with pytest.raises(ModelError, match=f"^{garbage}: not a valid TFLite model .*copy it again"):
        Classifier.open(ModelConfig(path=str(garbage)))
    with pytest.raises(ModelError, match=f"^{garbage}: not a valid TFLite model"):
        load_labels(garbage)  # the review page reads labels on its own


def test_the_demo_says_a_file_is_no_model_before_it_asks_for_a_keep_rule(tmp_path, cli_env):
    garbage = tmp_path / "notes.tflite"
    garbage.write_text("hello, this is not a model\n" * 20)
    assert one_error_line(demo(tmp_path, garbage, cli_env)).startswith(f"{garbage}: not a valid TFLite model")


def test_a_truncated_catalog_model_is_damaged(tmp_path):
    truncated = tmp_path / TINY_MODEL.name
    truncated.write_bytes(TINY_MODEL.read_bytes()[:100_000])
    with pytest.raises(ModelError, match="for imagenet-tiny: the file is damaged"):
        Classifier.open(ModelConfig(path=str(truncated)))


# --- absurd label numbers -------------------------------------------------------------------------

def test_a_label_number_of_two_billion_is_one_clear_error_not_a_memory_error(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("0 background\n2000000000 narwhal\n")
    with pytest.raises(ModelError, match=rf"^{labels}: label number 2000000000 is beyond the largest the "
                                         r"appliance accepts \(\d+\)"):
        load_labels(TINY_MODEL, labels)
    with pytest.raises(ModelError, match="label number 2000000000"):
        Classifier.open(ModelConfig(path=str(TINY_MODEL), labels=str(labels)))


@pytest.mark.parametrize("digits", [400, 5000])  # 5000: more than Python turns into an int by default
def test_a_label_number_of_thousands_of_digits_is_shortened_in_the_error(tmp_path, digits):
    labels = tmp_path / "labels.txt"
    labels.write_text(f"0 background\n{'9' * digits} narwhal\n")
    with pytest.raises(ModelError) as error:
        load_labels(TINY_MODEL, labels)
    assert len(str(error.value)) < 300 and f"{digits} digits" in str(error.value)
