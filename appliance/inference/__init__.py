"""The model: running it and knowing which one it is.

* ``runtime`` — loading a model file for the classifier or the detector: LiteRT (or ``tflite_runtime``),
  imported only when a model is opened; the file's checks, the Coral Edge TPU, threads, input quantization.
* ``classifier`` — ``Classifier``: top-k labels of a frame (or of a crop).
* ``detector`` — ``Detector``: boxes of objects in a frame, from SSD models with
  ``TFLite_Detection_PostProcess`` outputs; the crops it leads to are cut by ``pipeline.detections``.
* ``labels`` — labels from a model's own metadata or a labels file; whether a file is a TFLite model at all.
* ``catalog`` — the models catalog (classifiers and detectors): names, canonical URLs, sha256; which
  catalog model a file is, and whether it is damaged.
* ``model_files`` — fetching (downloads, zip members, a labelmap made into a labels file), installing
  only on a matching sha256, verifying.
"""
