"""Loading a TFLite model for the classifier or the detector: the runtime, the file's checks, the accelerator.

The runtime is LiteRT (``ai_edge_litert``) where pip installs it, else ``tflite_runtime`` where that is
what is installed (pip, Python 3.11 and older). The accelerator is chosen by the model's config
(``model.accelerator`` for the classifier): ``cpu``; ``coral`` (the Edge TPU is required; if it is
missing the appliance says so loudly and falls back to the CPU or stops, per ``on_accelerator_missing``);
``auto`` (the Edge TPU when it is there, quietly the CPU otherwise). Input preprocessing comes from the
model's own quantization parameters (``input_lut``), so uint8, int8 and float32 models all work.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.errors import AcceleratorMissing, ModelError, RuntimeMissing
from appliance.inference.catalog import ModelEntry, identify_model, load_catalog
from appliance.inference.labels import check_tflite
from appliance.storage.files import sha256_file

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"
RUNTIME_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
# MobileNet-style models expect pixels normalised to [-1, 1]: (pixel - 127.5) / 127.5.
INPUT_MEAN, INPUT_STD = 127.5, 127.5


def import_runtime():
    """The TFLite interpreter module: LiteRT if installed, else ``tflite_runtime``."""
    for name in RUNTIME_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise RuntimeMissing("no TFLite runtime: `pip install ai-edge-litert` into the appliance's venv (wheels for "
                         "x86-64 and aarch64); tflite_runtime is used instead where it is installed, but it has no "
                         "wheels past Python 3.11 and no Debian or Raspberry Pi OS package")


def runtime_name(runtime) -> str:
    package = runtime.__name__.split(".")[0]
    version = getattr(importlib.import_module(package), "__version__", "")
    return f"{package} {version}".strip()


@dataclass(frozen=True)
class AcceleratorState:
    """Which backend runs the model, and why (for the log, the status and every kept record)."""

    requested: str
    backend: str  # "cpu" or "coral"
    problem: str = ""  # why the requested accelerator is not in use, if it is not

    @property
    def is_degraded(self) -> bool:
        return self.requested == "coral" and self.backend != "coral"


@dataclass(frozen=True)
class LoadedModel:
    """A checked model file with its interpreter allocated, before anything model-specific is read."""

    interpreter: object
    path: Path
    sha256: str
    catalog_entry: ModelEntry | None  # None when the catalog does not know the file
    accelerator: AcceleratorState
    runtime: str  # "ai_edge_litert 2.3.0"
    num_threads: int


def open_model(model_config, catalog=None, section: str = "model") -> LoadedModel:
    """Check the file ``model_config.path`` names, then load it on the accelerator the config asks for.

    The file is checked before anything is read from it: against the models catalog (``catalog``,
    else the built-in one), where a damaged copy of a catalog model is a ``ModelError``; then that it
    is a TFLite model the runtime loads. ``section`` is the config section the errors name
    (``model.path``, ``detector.path``).
    """
    path = Path(model_config.path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found: `appliance models fetch NAME` installs one, "
                         f"or set {section}.path")
    catalog = catalog or load_catalog()
    sha256 = _sha256(path)
    entry = identify_model(path, sha256, catalog)
    check_tflite(path)
    runtime = import_runtime()
    threads = model_config.num_threads or default_threads()
    interpreter, accelerator = _open_interpreter(runtime, model_config, path, threads, catalog, section)
    return LoadedModel(interpreter, path, sha256, entry, accelerator, runtime_name(runtime), threads)


def default_threads() -> int:
    """Every core but one: the runtime splits each invoke() across its threads and waits for the
    slowest, so a core shared with capture and JPEG encoding stalls every inference (measured by
    ``appliance bench``: see the README's performance section)."""
    return max(1, (os.cpu_count() or 1) - 1)


def input_lut(details):
    """A pixel → input-value table for the input tensor ``details``, or None when raw pixels already
    are the model's input."""
    dtype = details["dtype"]
    scale, zero_point = details["quantization"]
    pixels = np.arange(256, dtype=np.float64)
    if dtype == np.float32:
        return ((pixels - INPUT_MEAN) / INPUT_STD).astype(np.float32)
    if dtype not in (np.uint8, np.int8):
        raise ModelError(f"unsupported input type {np.dtype(dtype).name}: the appliance runs uint8, int8 "
                         "and float32 models")
    if dtype == np.uint8 and (not scale or (abs(scale * INPUT_STD - 1) < 1e-2 and abs(zero_point - INPUT_MEAN) <= 1)):
        return None  # quantized so that raw pixels land within half a step of the normalised input
    info = np.iinfo(dtype)
    quantized = np.round((pixels - INPUT_MEAN) / INPUT_STD / scale + zero_point)
    return np.clip(quantized, info.min, info.max).astype(dtype)


def edgetpu_sibling(path: Path) -> Path:
    """Where the Edge TPU build of a model is looked for by default: NAME_edgetpu.tflite beside it."""
    return path.with_name(f"{path.stem}_edgetpu{path.suffix}")


def _sha256(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as e:
        raise ModelError(f"{path}: the model file cannot be read ({e.strerror})") from None


def _open_interpreter(runtime, model_config, path, threads, catalog, section):
    requested = model_config.accelerator
    if requested in ("coral", "auto"):
        tpu_path = Path(model_config.edgetpu_path) if model_config.edgetpu_path else edgetpu_sibling(path)
        interpreter, problem = _try_edgetpu(runtime, tpu_path, catalog, section)
        if interpreter is not None:
            log.info("running %s on the Coral Edge TPU", tpu_path)
            return interpreter, AcceleratorState(requested, "coral")
        if requested == "coral":
            message = f"Coral Edge TPU requested ({section}.accelerator = \"coral\") but {problem}"
            if model_config.on_accelerator_missing == "stop":
                raise AcceleratorMissing(message + f"; plug in the Coral, or set {section}.on_accelerator_missing "
                                         "= \"fallback\" to run on the CPU")
            log.error("%s; FALLING BACK TO THE CPU (slower)", message)
        else:
            log.info("no Coral Edge TPU (%s): running on the CPU", problem)
        state = AcceleratorState(requested, "cpu", problem)
    else:
        state = AcceleratorState(requested, "cpu")
    return _load(runtime, path, section, num_threads=threads), state


def _try_edgetpu(runtime, tpu_path, catalog, section):
    """An interpreter on the Edge TPU, or (None, why not)."""
    if not tpu_path.is_file():
        return None, f"there is no Edge TPU model at {tpu_path}"
    try:
        delegate = runtime.load_delegate(EDGETPU_LIBRARY)
    except (OSError, ValueError, RuntimeError) as e:
        return None, f"the Edge TPU runtime or device is not available ({EDGETPU_LIBRARY}: {e})"
    # Checked only now that it is about to run: a damaged build with no TPU plugged in harms nothing
    identify_model(tpu_path, _sha256(tpu_path), catalog)
    check_tflite(tpu_path)
    return _load(runtime, tpu_path, section, experimental_delegates=[delegate]), ""


def _load(runtime, path, section, **options):
    try:
        interpreter = runtime.Interpreter(model_path=str(path), **options)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        if "edgetpu-custom-op" in str(e):
            raise ModelError(f"{path}: this model is compiled for the Coral Edge TPU and cannot run on the CPU: "
                             f"set {section}.path to the plain model and {section}.accelerator = \"auto\"") from None
        raise ModelError(f"{path}: not a valid TFLite model (the runtime says: {str(e).splitlines()[0]}): "
                         "copy it again, or fetch a model with `appliance models fetch NAME`") from None
    return interpreter
