"""The path of a frame: ``Frame`` → classifier → ``Classification`` → policy → ``Decision`` → writer.

* ``frames`` — the plain objects a frame passes through (``Frame``, ``Classification``, ``Keep``,
  ``Discard``), buildable by hand in a test.
* ``policy`` — the keep rule: pure, no I/O and no clock (time is passed in).
* ``detections`` — a detector's boxes as plain values, and each box's square crop from the main image.
* ``tracks`` — detections joined into tracks across frames, a track's species by score-weighted
  votes, its best frames kept, an ``event_id`` per track (pure).
* ``two_stage`` — the detector stage: detect → crop → classify → tracks → keep, per frame.
* ``loop`` — the capture → classify → decide loop, its pause and its heartbeat.
* ``writer`` — the writer thread: encodes the kept JPEG and thumbnail, writes them durably, then the row.

Imports no camera, GPIO, web or inference runtime: those are adapters handed in by ``service.app``.
"""
