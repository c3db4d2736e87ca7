"""[deployment]: where and how the camera is set up (Camtrap DP's deployment), every key optional."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED

from appliance.config import Config, load_config, to_toml
from appliance.config.checks import check_deployment
from appliance.config.schema import DeploymentConfig
from appliance.errors import ConfigError

DEPLOYMENT = """[deployment]
id = "feeder-2026-05"
location_id = "garden-feeder"
location_name = "Garden feeder, Valparaíso"
latitude = -33.045646
longitude = -71.620361
coordinate_uncertainty_m = 30
camera_height_m = 1.2
camera_tilt_deg = -10
camera_heading_deg = 225
setup_by = "Ana Pérez"
start = "2026-05-01T08:00:00-04:00"
end = "2026-06-01 18:30:00.250Z"
"""


def write(tmp_path, text):
    path = tmp_path / "appliance.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_an_empty_deployment_section_is_valid_and_sets_nothing(tmp_path):
    assert load_config(write(tmp_path, "[deployment]\n")) == Config()
    deployment = Config().deployment
    assert deployment.id == "" and deployment.latitude is None and deployment.start == deployment.end == ""


def test_a_whole_deployment_loads_its_times_normalised_to_the_second_with_their_offset(tmp_path):
    deployment = load_config(write(tmp_path, DEPLOYMENT)).deployment
    assert (deployment.id, deployment.location_id, deployment.setup_by) == ("feeder-2026-05", "garden-feeder", "Ana Pérez")
    assert (deployment.latitude, deployment.longitude, deployment.coordinate_uncertainty_m) == (-33.045646, -71.620361, 30)
    assert (deployment.camera_height_m, deployment.camera_tilt_deg, deployment.camera_heading_deg) == (1.2, -10.0, 225.0)
    # Camtrap DP's deploymentStart/End: %Y-%m-%dT%H:%M:%S%z, so no fraction of a second
    assert deployment.start == "2026-05-01T08:00:00-04:00" and deployment.end == "2026-06-01T18:30:00Z"


def test_the_effective_config_file_reads_back_the_same_deployment(tmp_path):
    config = load_config(write(tmp_path, DEPLOYMENT))
    assert load_config(write(tmp_path, to_toml(config))).deployment == config.deployment
    assert "# latitude = (unset)" in to_toml(Config())


def test_the_keys_mirror_the_fields_of_camtrap_dps_deployments_table():
    schema = json.loads((SHARED / "data/camtrap-dp-1.0.2/deployments-table-schema.json").read_text())
    camtrap = {f["name"]: f for f in schema["fields"]}
    ours = {"id": "deploymentID", "location_id": "locationID", "location_name": "locationName", "latitude": "latitude",
            "longitude": "longitude", "coordinate_uncertainty_m": "coordinateUncertainty",
            "camera_height_m": "cameraHeight", "camera_tilt_deg": "cameraTilt", "camera_heading_deg": "cameraHeading",
            "setup_by": "setupBy", "start": "deploymentStart", "end": "deploymentEnd"}
    assert set(ours) == {name for name in DeploymentConfig.__dataclass_fields__}
    for key, name in ours.items():  # our bounds are Camtrap DP's, or within them; 0 m of uncertainty is "not given"
        rules, constraints = DeploymentConfig.__dataclass_fields__[key].metadata, camtrap[name]["constraints"]
        lowest = 1 if key == "coordinate_uncertainty_m" and rules["min"] == 0 else rules.get("min", float("inf"))
        assert lowest >= constraints.get("minimum", float("-inf")), key
        assert rules.get("max", float("-inf")) <= constraints.get("maximum", float("inf")), key


@pytest.mark.parametrize("line, key, problem, allowed", [
    ("latitude = -91", "deployment.latitude", "-91.0 is out of range", "a number from -90.0 to 90.0"),
    ("longitude = 180.5", "deployment.longitude", "180.5 is out of range", "a number from -180.0 to 180.0"),
    ('latitude = "33 S"', "deployment.latitude", "'33 S' is not a number", "a number from -90.0 to 90.0"),
    ("coordinate_uncertainty_m = 12.5", "deployment.coordinate_uncertainty_m", "12.5 is not a whole number", "a whole number"),
    ("camera_tilt_deg = -95", "deployment.camera_tilt_deg", "-95.0 is out of range", "a number from -90.0 to 90.0"),
    ("camera_heading_deg = 361", "deployment.camera_heading_deg", "361.0 is out of range", "a number from 0.0 to 360.0"),
    ("camera_height_m = 120", "deployment.camera_height_m", "120.0 is out of range", "a number from 0.0 to 100.0"),
    ('start = "2026-05-01T08:00:00"', "deployment.start", "'2026-05-01T08:00:00' has no UTC offset (add one, such as +02:00, or Z for UTC)",
     '"" or a quoted date and time with its UTC offset'),
    ('end = "1 May 2026"', "deployment.end", "'1 May 2026' is not an ISO 8601 date and time", '"" or a quoted date'),
    ("start = 2026-05-01T08:00:00+02:00", "deployment.start", "is not a string", '"" or a quoted date'),
    ('id = "one\\ntwo"', "deployment.id", "the value has a control character", "one line of at most 200 characters"),
    (f'setup_by = "{"x" * 201}"', "deployment.setup_by", "the value is 201 characters long", "one line of at most 200"),
])
def test_a_bad_value_is_one_line_naming_the_file_the_key_and_what_is_allowed(tmp_path, line, key, problem, allowed):
    path = write(tmp_path, f"[deployment]\n{line}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {key}: ") and problem in message and f", allowed: {allowed}" in message
    assert "\n" not in message


@pytest.mark.parametrize("values, key, problem", [
    ({"latitude": -33.0}, "deployment.longitude", "must be set with deployment.latitude"),
    ({"longitude": -71.0}, "deployment.latitude", "must be set with deployment.longitude"),
    ({"coordinate_uncertainty_m": 30}, "deployment.coordinate_uncertainty_m", "set, but the deployment has no latitude"),
    ({"end": "2026-06-01T00:00:00Z"}, "deployment.start", "must be set with deployment.end"),
    ({"start": "2026-06-01T02:00:00+02:00", "end": "2026-06-01T00:00:00Z"}, "deployment.end",
     "2026-06-01T00:00:00Z is not after deployment.start (2026-06-01T02:00:00+02:00)"),
])
def test_keys_that_only_make_sense_together_are_checked_together(values, key, problem):
    with pytest.raises(ConfigError) as error:
        check_deployment(DeploymentConfig(**values), "appliance.toml")
    assert str(error.value).startswith(f"appliance.toml: {key}: {problem}")


def test_a_deployment_that_is_still_out_has_a_start_and_no_end():
    check_deployment(DeploymentConfig(latitude=0.0, longitude=0.0, start="2026-05-01T08:00:00Z"), "appliance.toml")


def test_the_loader_refuses_a_deployment_whose_parts_do_not_go_together(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text("[deployment]\nlatitude = -33.05\n")  # a latitude without its longitude
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: deployment.")
