"""The classifier: one TFLite interpreter per process, on the CPU or a Coral Edge TPU.

The runtime is LiteRT (``ai_edge_litert``) where pip installs it, else ``tflite_runtime`` where that is
what is installed (pip, Python 3.11 and older). Input preprocessing and output dequantization come
from the model's own quantization parameters, so uint8, int8 and float32 models all work. The
accelerator is chosen by ``model.accelerator``: ``cpu``; ``coral`` (the Edge TPU is required; if it is
missing the appliance says so loudly and falls back to the CPU or stops, per
``model.on_accelerator_missing``); ``auto`` (the Edge TPU when it is there, quietly the CPU otherwise).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.errors import AcceleratorMissing, ModelError, RuntimeMissing
from appliance.inference.catalog import identify_model, load_catalog
from appliance.inference.labels import check_tflite, load_labels
from appliance.pipeline.frames import Classification
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


class Classifier:
    """Classifies RGB ``uint8`` frames at the model's input size; build it with ``Classifier.open``."""

    def __init__(self, interpreter, labels, model_path, model_sha256, accelerator, runtime, top_k=5,
                 catalog_entry=None):
        self.interpreter = interpreter
        self.labels = labels
        self.model_path = Path(model_path)
        self.model_sha256 = model_sha256
        self.catalog_entry = catalog_entry  # the models catalog's entry for this model; None if unknown to it
        self.accelerator = accelerator
        self.runtime = runtime
        self.top_k = top_k
        self.num_threads = None  # set by open(); None when built around an interpreter made elsewhere
        self._input = interpreter.get_input_details()[0]
        self._output = interpreter.get_output_details()[0]
        _, height, width, channels = self._input["shape"]
        if channels != 3:
            raise ModelError(f"{model_path}: expects {channels}-channel input; the appliance feeds RGB images")
        self.input_size = (int(width), int(height))
        self._lut = _input_lut(self._input)
        scale, zero_point = self._output["quantization"]
        self._out_scale, self._out_zero = (scale, zero_point) if scale else (1.0, 0)
        outputs = int(np.prod(self._output["shape"]))
        if outputs != len(labels):
            raise ModelError(f"{model_path}: the model has {outputs} outputs but its labels list has "
                             f"{len(labels)} entries: set model.labels to the model's own labels file")

    @classmethod
    def open(cls, model_config, catalog=None) -> Classifier:
        """Load the model, its labels, and the accelerator that ``model_config`` asks for.

        The model file is checked before anything is read from it: against the models catalog
        (``catalog``, else the built-in one), where a damaged copy of a catalog model is a
        ``ModelError``; then that it is a TFLite model the runtime loads; only then its labels.
        """
        path = Path(model_config.path)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found: `appliance models fetch NAME` installs one, "
                             "or set model.path")
        catalog = catalog or load_catalog()
        sha256 = _sha256(path)
        entry = identify_model(path, sha256, catalog)
        check_tflite(path)
        runtime = import_runtime()
        threads = model_config.num_threads or default_threads()
        interpreter, accelerator = _open_interpreter(runtime, model_config, path, threads, catalog)
        labels = load_labels(path, model_config.labels or None)
        classifier = cls(interpreter, labels, path, sha256, accelerator, runtime_name(runtime),
                         top_k=model_config.top_k, catalog_entry=entry)
        classifier.num_threads = threads
        return classifier

    @property
    def backend(self) -> str:
        return self.accelerator.backend

    def classify(self, lores: np.ndarray) -> Classification:
        """Top-k ``(label, score)`` for one RGB frame at ``input_size``; scores are dequantized."""
        tensor = lores if self._lut is None else self._lut[lores]
        started = time.perf_counter()
        self.interpreter.set_tensor(self._input["index"], tensor[np.newaxis])
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self._output["index"]).reshape(-1)
        inference_ms = (time.perf_counter() - started) * 1000.0
        k = min(self.top_k, raw.size)
        best = np.argpartition(raw, -k)[-k:]
        best = best[np.argsort(raw[best])[::-1]]
        scores = (raw[best].astype(np.float32) - self._out_zero) * self._out_scale
        top_k = tuple((self.labels[i], round(float(s), 5)) for i, s in zip(best.tolist(), scores.tolist()))
        return Classification(top_k=top_k, inference_ms=inference_ms, backend=self.backend)

    def bare_invoke(self, lores: np.ndarray) -> None:
        """Only set the input and invoke: the yardstick the benchmark measures the loop against."""
        self.interpreter.set_tensor(self._input["index"], lores[np.newaxis])
        self.interpreter.invoke()


def default_threads() -> int:
    """Every core but one: the runtime splits each invoke() across its threads and waits for the
    slowest, so a core shared with capture and JPEG encoding stalls every inference (measured by
    ``appliance bench``: see the README's performance section)."""
    return max(1, (os.cpu_count() or 1) - 1)


def _input_lut(details):
    """A pixel → input-value table, or None when raw pixels already are the model's input."""
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


def _sha256(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as e:
        raise ModelError(f"{path}: the model file cannot be read ({e.strerror})") from None


def _open_interpreter(runtime, model_config, path, threads, catalog):
    requested = model_config.accelerator
    if requested in ("coral", "auto"):
        tpu_path = Path(model_config.edgetpu_path) if model_config.edgetpu_path else edgetpu_sibling(path)
        interpreter, problem = _try_edgetpu(runtime, tpu_path, catalog)
        if interpreter is not None:
            log.info("running %s on the Coral Edge TPU", tpu_path)
            return interpreter, AcceleratorState(requested, "coral")
        if requested == "coral":
            message = f"Coral Edge TPU requested (model.accelerator = \"coral\") but {problem}"
            if model_config.on_accelerator_missing == "stop":
                raise AcceleratorMissing(message + "; plug in the Coral, or set "
                                         "model.on_accelerator_missing = \"fallback\" to run on the CPU")
            log.error("%s; FALLING BACK TO THE CPU (slower)", message)
        else:
            log.info("no Coral Edge TPU (%s): running on the CPU", problem)
        state = AcceleratorState(requested, "cpu", problem)
    else:
        state = AcceleratorState(requested, "cpu")
    return _load(runtime, path, num_threads=threads), state


def edgetpu_sibling(path: Path) -> Path:
    """Where the Edge TPU build of a model is looked for by default: NAME_edgetpu.tflite beside it."""
    return path.with_name(f"{path.stem}_edgetpu{path.suffix}")


def _try_edgetpu(runtime, tpu_path, catalog):
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
    return _load(runtime, tpu_path, experimental_delegates=[delegate]), ""


def _load(runtime, path, **options):
    try:
        interpreter = runtime.Interpreter(model_path=str(path), **options)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        if "edgetpu-custom-op" in str(e):
            raise ModelError(f"{path}: this model is compiled for the Coral Edge TPU and cannot run on the "
                             "CPU: set model.path to the plain model and model.accelerator = \"auto\"") from None
        raise ModelError(f"{path}: not a valid TFLite model (the runtime says: {str(e).splitlines()[0]}): "
                         "copy it again, or fetch a model with `appliance models fetch NAME`") from None
    return interpreter
