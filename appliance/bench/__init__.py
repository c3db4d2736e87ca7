"""Benchmarks (``appliance bench``, ``bench-web``, ``bench-offload``): not part of the running appliance.

* ``classify`` — the runtime's bare ``invoke()`` against the whole capture → classify → keep loop.
* ``web`` — the page's response times and the sync client's memory.
* ``offload`` — the USB offload against ``cp`` + ``sync`` on real filesystems.
"""
