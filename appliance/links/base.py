"""What every link does for the links service: start, say whether it is up, send one entry, describe itself."""

from __future__ import annotations

from typing import Protocol

from appliance.storage.outbox import Entry, Outbox


class Link(Protocol):
    """One way out. ``send`` either succeeds (its far end confirmed the entry: it may be deleted) or raises
    ``LinkError`` (tried again later); it never blocks much longer than its own timeouts."""

    name: str  # one of outbox.LINKS

    def start(self) -> None:
        """Begin connecting, in the background where that takes time; never raises for a far end that is down."""

    def is_up(self) -> bool:
        """Whether sending now may succeed (a connected broker); a link without a connection says True."""

    def catch_up(self, outbox: Outbox, store) -> None:
        """Queue what should be sent and is not queued (the uploads of keeps kept before the link was
        configured, or re-indexed at start-up); most links queue nothing."""

    def tick(self, outbox: Outbox) -> None:
        """Periodic work, every step of the service (the MQTT link queues its retained status here)."""

    def send(self, entry: Entry, capture: dict | None, store) -> None:
        """Deliver ``entry``; ``capture`` is its keep's row as it is now (None for an entry of no keep).
        ``store`` is the links' ``Store`` (to read a keep's files, or mark it uploaded)."""

    def describe(self) -> dict:
        """``{"connected": bool, "problem": str | None}`` and anything else of the link's own state."""

    def close(self) -> None:
        """Let go of connections; what is still queued stays in the outbox."""
