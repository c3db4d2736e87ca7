"""Shared fixtures: paths to the real models and photos in ../shared, and configs in temp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.config import Config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS = SHARED / "models" / "coral"
IMAGES = SHARED / "images"
BIRD_MODEL = MODELS / "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
TINY_MODEL = MODELS / "mobilenet_v1_0.25_128_quant.tflite"
TINY_EDGETPU_MODEL = MODELS / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"

if not MODELS.is_dir():  # pragma: no cover - a setup problem, not a test outcome
    raise RuntimeError(f"the tests need the shared models and photos at {SHARED} (beside the repository)")


@pytest.fixture
def make_config(tmp_path):
    """A Config for a replay run in tmp_path: ``make_config(model=..., camera={...}, keep={...})``."""

    def make(model=BIRD_MODEL, images=IMAGES, **sections):
        base = Config().replace(
            camera={"backend": "replay", "replay_dir": str(images), "fps": 0.0, "replay_loop": False},
            model={"path": str(model), "num_threads": 2},
            storage={"data_dir": str(tmp_path / "data"), "min_free_bytes": 0},
            status={"runtime_dir": str(tmp_path / "run"), "interval_s": 0.1},
        )
        return base.replace(**sections)

    return make


@pytest.fixture
def cli_env(tmp_path):
    """Environment for running the ``appliance`` command in a child process."""
    env = dict(os.environ, PYTHONPATH=str(REPO), APPLIANCE_MODELS_DIR=str(tmp_path / "models"))
    env.pop("NOTIFY_SOCKET", None)
    return env
