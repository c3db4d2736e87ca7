"""The config file: defaults, strict checking, and errors that say file, key and what is allowed."""

from __future__ import annotations

import tomllib

import pytest

from appliance.cli import main
from appliance.config import Config, load_config, parse_bytes, to_toml
from appliance.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return path


def test_an_empty_file_gives_every_default(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()


def test_values_in_the_file_override_the_defaults(tmp_path):
    config = load_config(write(tmp_path, '[camera]\nfps = 2\n[keep]\nlabels = ["*Owl*"]\ncooldown_s = 30\n'))
    assert config.camera.fps == 2.0 and isinstance(config.camera.fps, float)
    assert config.keep.labels == ("*Owl*",)
    assert config.keep.cooldown_s == 30.0
    assert config.model == Config().model


def test_an_unknown_key_names_the_file_the_key_and_the_allowed_keys(tmp_path):
    path = write(tmp_path, "[camera]\nframerate = 5\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: camera.framerate: unknown key, allowed: ")
    assert "fps" in message and "still_size" in message


def test_an_unknown_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"cameras: unknown section, allowed: \[camera\]"):
        load_config(write(tmp_path, "[cameras]\nfps = 5\n"))


@pytest.mark.parametrize("text, key, allowed", [
    ('[camera]\nfps = "fast"\n', "camera.fps", "a number from 0.0 to 120.0"),
    ("[camera]\nfps = 500\n", "camera.fps", "a number from 0.0 to 120.0"),
    ('[camera]\nbackend = "webcam"\n', "camera.backend", '"picamera2" or "replay"'),
    ("[camera]\nstill_size = [1920]\n", "camera.still_size", "[WIDTH, HEIGHT]"),
    ("[camera]\nreplay_loop = 1\n", "camera.replay_loop", "true or false"),
    ("[model]\nnum_threads = 2.5\n", "model.num_threads", "a whole number"),
    ("[model]\nnum_threads = true\n", "model.num_threads", "a whole number"),
    ('[keep]\nlabels = "bird"\n', "keep.labels", "a list of strings"),
    ("[keep]\nmin_score = 1.5\n", "keep.min_score", "from 0.0 to 1.0"),
    ('[keep]\nmin_score_by_label = { "*Owl*" = 2 }\n', "keep.min_score_by_label", "from 0.0 to 1.0"),
    ('[storage]\nquota_bytes = "lots"\n', "storage.quota_bytes", "a size"),
    ('[storage]\nwhen_full = "panic"\n', "storage.when_full", '"stop" or "evict-oldest"'),
])
def test_a_wrong_type_or_range_names_the_key_and_what_is_allowed(tmp_path, text, key, allowed):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: {key}: ")
    assert allowed in str(error.value)


def test_invalid_toml_and_a_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[camera\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_sizes_read_as_bytes_or_with_units(tmp_path):
    assert parse_bytes("500 MB") == 500_000_000
    assert parse_bytes("2GiB") == 2 * 2**30
    assert parse_bytes(1234) == 1234
    config = load_config(write(tmp_path, '[storage]\nquota_bytes = "8 GB"\nmin_free_bytes = 1000\n'))
    assert config.storage.quota_bytes == 8_000_000_000 and config.storage.min_free_bytes == 1000


def test_relative_paths_are_taken_from_the_config_files_folder(tmp_path):
    config = load_config(write(tmp_path, '[storage]\ndata_dir = "data"\n[model]\npath = "/abs/m.tflite"\n'))
    assert config.storage.data_dir == str(tmp_path / "data")
    assert config.model.path == "/abs/m.tflite"


def test_show_prints_a_file_that_loads_back_to_the_same_config(tmp_path):
    config = load_config(write(tmp_path, '[keep]\nlabels = ["*Owl*"]\nmin_score_by_label = { "Bubo*" = 0.3 }\n'))
    text = to_toml(config)
    assert "# labels = " not in text and 'labels = ["*Owl*"]' in text
    assert "# ignore = (unset)" in text  # unset keep rules come from the model's catalog entry
    reloaded = load_config(write(tmp_path, text))
    assert reloaded == config
    assert tomllib.loads(text)["camera"]["fps"] == 5.0


def test_config_check_exits_zero_on_a_good_file_and_two_with_one_line_on_a_bad_one(tmp_path, capsys):
    good = write(tmp_path, "[camera]\nfps = 1\n")
    assert main(["config", "check", str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: ok"
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera]\nfsp = 1\n")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"appliance: error: {bad}: camera.fsp: unknown key") and "\n" not in err


def test_config_show_prints_the_effective_config_with_defaults(tmp_path, capsys):
    assert main(["config", "show", str(write(tmp_path, "[camera]\nfps = 1\n"))]) == 0
    out = capsys.readouterr().out
    assert "fps = 1.0" in out and 'when_full = "stop"' in out and "jpeg_quality = 90" in out


@pytest.mark.parametrize("text, key, problem", [
    ("[gpio]\nkeep_led = 17\n", "gpio.keep_led", "BCM 17 is already gpio.status_led"),
    ("[gpio]\noffload_button = 5\n", "gpio.offload_button", "BCM 5 is already gpio.pause_button"),
    ("[gpio]\nwarning_led = 40\n", "gpio.warning_led", "40 is out of range"),
    ("[gpio]\nstatus_led = 0\n", "gpio.status_led", "reserved for HAT identification"),
    ("[gpio]\nrtc = true\nstatus_led = 3\n", "gpio.status_led", "I2C pin, used by the real-time clock"),
])
def test_a_pin_used_twice_missing_or_reserved_is_an_error_naming_the_key(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: {key}: ") and problem in str(error.value)


def test_the_i2c_pins_are_free_for_leds_when_there_is_no_clock(tmp_path):
    assert load_config(write(tmp_path, "[gpio]\nstatus_led = 2\nkeep_led = 3\n")).gpio.status_led == 2
