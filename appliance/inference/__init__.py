"""The model: running it and knowing which one it is.

* ``classifier`` — ``Classifier`` over LiteRT (or ``tflite_runtime``), optionally on a Coral Edge TPU;
  the runtime is imported only when a classifier is built.
* ``labels`` — labels from a model's own metadata or a labels file; whether a file is a TFLite model at all.
* ``catalog`` — the models catalog: names, canonical URLs, sha256, download and verify; which catalog
  model a file is, and whether it is damaged.
"""
