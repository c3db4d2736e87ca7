"""The path of a frame: ``Frame`` → classifier → ``Classification`` → policy → ``Decision`` → writer.

* ``frames`` — the plain objects a frame passes through (``Frame``, ``Classification``, ``Keep``,
  ``Discard``), buildable by hand in a test.
* ``policy`` — the keep rule: pure, no I/O and no clock (time is passed in).
* ``loop`` — the capture → classify → decide loop, its pause and its heartbeat.
* ``writer`` — the writer thread: encodes the kept JPEG and thumbnail, writes them durably, then the row.

Imports no camera, GPIO, web or inference runtime: those are adapters handed in by ``service.app``.
"""
