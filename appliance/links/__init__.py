"""The links: what the appliance tells the world, from its outbox (``storage.outbox``).

* ``service`` — ``appliance links``: the process that drains the outbox through each configured link,
  and writes their state (connected, last success, queue depth) to ``links.json`` in the runtime dir.
* ``mqtt`` — events, snapshots, the retained status and availability, Home Assistant discovery, commands.
* ``upload`` — each kept image and a JSON sidecar to an S3-compatible store, verified by its SHA-256.
* ``notify`` — notifications through Apprise, by per-label rules (``rules``).

A link implements ``Link`` (``base``). The camera never waits for one: they run in their own process.
"""
