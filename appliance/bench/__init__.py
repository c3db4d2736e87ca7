"""Benchmarks (``appliance bench``, ``bench-web``, ``bench-offload``, ``bench-links``, ``bench-upload``): not part of
the running appliance.

* ``classify`` — the runtime's bare ``invoke()`` against the whole capture → classify → keep loop
  (``lores``: a single-stream camera's software lores beside one inference).
* ``web`` — the page's response times and the sync client's memory (``web_data``: the fake store it
  serves; ``web_transfer``: zip export and sync over a real server).
* ``page_load`` — what people browsing the page cost the camera's keeps: ``appliance run``, the page
  and the browsers (``page_clients``) as three processes at the systemd units' priorities.
* ``offload`` — the USB offload against ``cp`` + ``sync`` on real filesystems (``offload_disks``: the
  loop devices, filesystem images and disk counters it runs on).
* ``two_stage`` — the two-stage loop (detector → crops → classifier → tracks) against its inferences run
  bare, by grid of tiles (``stage_timing``: ms per stage).
* ``links`` — a keep's MQTT event from its row's commit to a subscriber, and a backlog's drain
  (``mosquitto``: the broker it starts, as the tests do).
* ``links_loop`` — the loop with MQTT and upload off and on (``appliance bench --links``).
* ``outage`` — 10,000 keeps queued while the broker and the store are down, then all delivered and
  uploaded through more outages, verified, the links' memory watched (``outage_checks``: the checks);
  ``python -m appliance.bench.outage``, in ``./dev acceptance``.
* ``upload`` — the upload link against ``rclone copy`` to the same SeaweedFS (``seaweed``: the server it
  starts); ``appliance bench-upload``.
* ``common`` — what they share: A/B pairs run in alternation and their ratios summarised, the machine's
  description, percentiles, photo-like pixels.

Every ratio a benchmark reports comes from at least ``MIN_PAIRS`` pairs run in alternation (A, B, A,
B…), reported as the median of the per-pair ratios with their min–max: a busy moment on the machine
then slows one pair, not one whole side.
"""

MIN_PAIRS = 5  # here, not in common: the command modules read it without importing numpy
