"""``appliance bench-links``: a keep's MQTT event latency, and how fast a backlog drains; prints JSON."""

from __future__ import annotations

import json

from appliance.cli import add_command, positive_int


def register(subparsers):
    parser = add_command(subparsers, "bench-links", bench_links_command)
    parser.add_argument("--broker", default=None, metavar="URL",
                        help="mqtt://HOST:PORT (default: start Debian's mosquitto on 127.0.0.1 for the run)")
    parser.add_argument("--keeps", type=positive_int, default=200, metavar="N", help="keeps timed (default: 200)")
    parser.add_argument("--rate", type=float, default=20.0, metavar="PER_S",
                        help="keeps a second while timing (default: 20)")
    parser.add_argument("--backlog", type=positive_int, default=2000, metavar="N",
                        help="keeps queued with the links stopped, then drained (default: 2000)")


def bench_links_command(args) -> int:
    """Time a keep's MQTT event from its row's commit to a subscriber, and a backlog's drain.

    Inserts --keeps keeps into a store in a temp dir at --rate a second, as the writer does (row and
    outbox entry in one transaction), while the links service runs against the broker, and a
    subscriber notes each event's arrival: latency p50/p95/max in ms. Then queues --backlog keeps
    with the service stopped, starts it, and times their delivery (every one, none repeated).

    Example:
        appliance bench-links --keeps 200 --backlog 10000
    """
    from appliance.bench.links import run

    print(json.dumps(run(args.broker, args.keeps, args.rate, args.backlog), indent=1))
    return 0
