"""The classifier: one TFLite interpreter per process, on the CPU or a Coral Edge TPU.

The model is loaded by ``runtime.open_model`` (the runtime, the file's checks against the catalog, the
accelerator: see ``runtime``), the same way the detector's is. Input preprocessing and output
dequantization come from the model's own quantization parameters, so uint8, int8 and float32 models all
work. An object detector given as the classifier is refused before its labels are looked for.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from appliance.errors import ModelError
from appliance.inference.detector import detection_outputs
from appliance.inference.labels import load_labels
from appliance.inference.runtime import input_lut, open_model
from appliance.pipeline.frames import Classification

log = logging.getLogger(__name__)


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
        self._lut = input_lut(self._input)
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
        model = open_model(model_config, catalog)
        if detection_outputs(model.interpreter.get_output_details()) is not None:
            raise ModelError(f"{model.path}: is an object detector (TFLite_Detection_PostProcess outputs: boxes, "
                             "classes, scores, count), not an image classifier: give it as the detector "
                             "(--detector), and as the classifier (--model, model.path) a model with one output of "
                             "class scores, such as `appliance models fetch inat-bird`")
        labels = load_labels(model.path, model_config.labels or None)
        classifier = cls(model.interpreter, labels, model.path, model.sha256, model.accelerator, model.runtime,
                         top_k=model_config.top_k, catalog_entry=model.catalog_entry)
        classifier.num_threads = model.num_threads
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
