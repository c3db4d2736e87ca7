"""The outage acceptance run (issue 16): keeps queued while the broker and the object store are down, then
both come back; all delivered and uploaded, nothing lost or duplicated, memory flat while draining.

Real parts only, in a temp dir removed at the end (``--work DIR`` keeps it):

1. SeaweedFS (``bench.seaweed``) starts once to make the bucket; Mosquitto (``bench.mosquitto``) starts
   once for a real subscriber to register a persistent session (clean session off) on
   ``appliance/outage-cam/events`` at QoS 1: the broker keeps it in its saved state, so the subscriber
   is subscribed before the broker ever sees the links connect. Then both stop;
2. ``appliance links --config FILE`` starts as a process of its own and runs throughout;
3. ``keeps`` keeps are written by ``Store.add`` for MQTT and upload while both are down: the shared
   photos 640 px wide, each keep a different crop, each JPEG carrying its record (every SHA-256
   differs). The run waits until links.json says both links are down;
4. both come back. Every ``sample_s`` the links process's RSS is read from /proc/PID/status until each
   keep's event has arrived and each keep is marked uploaded. With ``cut_s``, when a link has sent half
   its keeps (its entries left in the outbox: the subscriber may get a burst later), both go down again
   for that long (the store SIGKILLed, as in a power cut of its machine; the broker stopped) and come
   back: an outage in the middle of each link's drain (one, if it caught both);
5. the links stopped, everything is checked (``outage_checks``): the events, the bucket (each image
   read back and hashed), the rows and the outbox.

``problems`` says, one line each, what was lost, duplicated or unverified, and whether memory grew past
``MAX_GROWTH_MB`` (20 MB) between the medians of the drain's first and last quarters. Why 20 MB: the
links hold nothing per keep (the outbox read ``BATCH`` entries at a time, a keep's row read when it is
sent, ``upload.WINDOW`` keeps in flight), so a drain of 10,000 keeps should grow by what caches take
once (SQLite's pages, boto3's and paho's buffers: a few MB; 2.7 MB measured, 71 → 74 MB); a leak of
one keep's row a keep (~4 KB: a dict of 32 fields) shows as 20-30 MB between the quarters, and of its
image bytes as hundreds.

Run it with ``python -m appliance.bench.outage --keeps 10000 [--json FILE]``: JSON on stdout; exit
status 1 with the problems on stderr, 2 if it could not measure (a server or the links would not start).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.bench.common import machine
from appliance.bench.mosquitto import Broker
from appliance.bench.outage_checks import EventsSubscriber, check_bucket, check_store, problems
from appliance.bench.seaweed import SeaweedServer
from appliance.config import Config, to_toml
from appliance.errors import BenchmarkError
from appliance.storage.store import DB_NAME, Store

log = logging.getLogger(__name__)

DEVICE = "outage-cam"
BUCKET = "outage"
WIDTH_PX = 640
SHIFT_PX = 16  # each keep a crop of its photo shifted by up to this much: 256 different crops a photo
CUT_S = 5.0
TICK_S = 0.1
FAST_TICK_S = 0.02
# A drain gives up when nothing moved for this long: longer than the upload link's longest wait between
# tries while down (upload.PROBE_MAX_S, 60 s) and paho's between reconnections (30 s), with room.
STALL_S = 150.0
OUTAGE_SEEN_S = 60.0
IMAGES = Path(__file__).resolve().parents[3] / "shared" / "images"


def run(keeps: int = 10_000, images_dir: Path = IMAGES, cut_s: float | None = CUT_S, sample_s: float = 1.0,
        stall_s: float = STALL_S, work: Path | None = None) -> dict:
    """Every figure of the module doc, as a dict ready for JSON (``problems`` is among them); ``cut_s``
    None: no outage in the middle of the drain. It gives up on a drain when nothing moved for ``stall_s``."""
    result = {"machine": machine(), "keeps": keeps, "cut_s": cut_s}
    with tempfile.TemporaryDirectory(prefix="appliance-bench-outage-") as tmp:
        root = Path(work) if work else Path(tmp)
        # The subscriber's session may have to hold a whole backlog, if it is back after the links:
        # mosquitto's default drops a session's messages past 1,000, a loss that would not be the links'.
        broker = Broker(root / "broker", options=("max_queued_messages 0",))
        server = SeaweedServer(root / "s3")
        events = links = None
        try:
            server.start().create_bucket(BUCKET)
            server.stop()
            broker.start()
            events = EventsSubscriber(broker.url, f"appliance/{DEVICE}/events", client_id=f"{DEVICE}-watcher")
            broker.stop()
            config = _config(root, broker, server)
            store = Store(config.storage.data_dir)
            links = _start_links(config, root)
            try:
                result["queued"] = _queue_keeps(store, keeps, Path(images_dir))
            finally:
                store.close()
            result["outage"] = _wait_for_outage(config, links, keeps)
            result.update(_drain(config, links, events, broker, server, keeps, cut_s, sample_s, stall_s))
            result["links_stopped"] = _stop_links(links)
            result["events"] = events.check(config.storage.data_dir)
            result["bucket"] = check_bucket(server, BUCKET, config.storage.data_dir, DEVICE)
            result["store"] = check_store(config.storage.data_dir)
        finally:
            if links is not None and links.poll() is None:
                links.kill()
                links.wait()
            if events is not None:
                events.close()
            broker.stop()
            server.stop()
    result["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    result["problems"] = problems(result)
    return result


def _config(root: Path, broker: Broker, server: SeaweedServer) -> Config:
    config = Config().replace(
        storage={"data_dir": str(root / "data"), "min_free_bytes": 0}, status={"runtime_dir": str(root / "run")},
        system={"hostname": DEVICE}, mqtt={"url": broker.url},
        upload={"endpoint": server.endpoint, "bucket": BUCKET, "access_key": server.access_key,
                "secret_key": server.secret_key})
    (root / "appliance.toml").write_text(to_toml(config))
    return config


def _start_links(config: Config, root: Path) -> subprocess.Popen:
    """``appliance links`` as its own process, its log in ``links.log`` (never a pipe nobody reads)."""
    package_root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")])))
    env.pop("NOTIFY_SOCKET", None)
    with open(root / "links.log", "ab") as output:
        return subprocess.Popen([sys.executable, "-m", "appliance", "links", "--config", str(root / "appliance.toml")],
                                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env,
                                cwd=root)


def _queue_keeps(store: Store, keeps: int, images_dir: Path) -> dict:
    """``keeps`` real keeps, queued for MQTT and upload as the writer queues them (``Store.add``)."""
    from PIL import Image

    from appliance.storage.images import kept_jpeg, make_thumbnail

    photos = []
    for path in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".bmp", ".png")):
        with Image.open(path) as image:
            width = WIDTH_PX + SHIFT_PX
            scaled = image.convert("RGB").resize((width, round(image.height * width / image.width)))
        photos.append((path.stem, scaled, make_thumbnail(scaled, 320)))
    if not photos:
        raise BenchmarkError(f"{images_dir} holds no photos (.jpg, .bmp, .png): give --images DIR")
    started, total = time.perf_counter(), 0
    for n in range(keeps):
        label, scaled, thumb = photos[n % len(photos)]
        turn = n // len(photos)
        dx, dy = turn % SHIFT_PX, (turn // SHIFT_PX) % SHIFT_PX
        image = scaled.crop((dx, dy, dx + WIDTH_PX, dy + scaled.height - SHIFT_PX))
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_795_000_000 + n // 4)) + f".{250 * (n % 4):03d}Z"
        record = {"captured_at": at, "clock_source": "ntp", "label": label, "score": 0.9,
                  "top_k": json.dumps([[label, 0.9]]), "kind": "match", "reason": "match", "model_name": "outage",
                  "model_sha256": "0" * 64, "backend": "cpu", "inference_ms": 9.0, "source": f"{label} #{n}",
                  "width": image.width, "height": image.height}
        data = kept_jpeg(image, 90, record)
        store.add(record, data, thumb, links=("mqtt", "upload"))
        total += len(data)
        if (n + 1) % 1000 == 0:
            log.info("queued %d of %d keeps", n + 1, keeps)
    return {"seconds": round(time.perf_counter() - started, 1), "mb": round(total / 1e6, 1),
            "kb_per_keep": round(total / keeps / 1e3, 1), "photos": len(photos)}


def _wait_for_outage(config: Config, links: subprocess.Popen, keeps: int) -> dict:
    """What links.json says once both links are down with every keep queued: the proof of an outage."""
    from appliance.links.service import read_links

    deadline = time.monotonic() + OUTAGE_SEEN_S
    while time.monotonic() < deadline:
        _check_alive(links)
        state = read_links(config.status.runtime_dir) or {"links": {}}
        said = {name: state["links"].get(name, {}) for name in ("mqtt", "upload")}
        if all(s.get("connected") is False and s.get("problem") and s.get("queued", 0) >= keeps
               for s in said.values()):
            log.info("both links down with %d keeps queued: mqtt: %s; upload: %s", keeps, said["mqtt"]["problem"],
                     said["upload"]["problem"])
            return {name: {"connected": s["connected"], "problem": s["problem"], "queued": s["queued"],
                           "failed": s.get("failed")} for name, s in said.items()}
        time.sleep(0.2)
    raise BenchmarkError(f"links.json did not say both links were down within {OUTAGE_SEEN_S:g} s")


def _drain(config, links, events, broker, server, keeps, cut_s, sample_s, stall_s) -> dict:
    """Both servers back until every keep's event has arrived and every keep is marked uploaded, or
    nothing moved for ``stall_s``; with ``cut_s``, both down for that long and back again when a link
    has sent half its keeps (once for each link, unless one cut came in the middle of both). Times are
    seconds from the servers' return."""
    database = sqlite3.connect(f"file:{Path(config.storage.data_dir) / DB_NAME}?mode=ro", uri=True, timeout=30)
    back = time.monotonic()
    samples = [(0.0, _rss_kb(links.pid))]
    _back(broker, server)
    log.info("broker and store back: draining %d keeps", keeps)
    done_at, cuts, cut_mid_drain, first_upload, next_sample_s = {}, [], set(), None, sample_s
    moved, moved_at = None, time.monotonic()
    try:
        while len(done_at) < 2 and time.monotonic() - moved_at < stall_s:
            _check_alive(links)
            now = time.monotonic() - back
            if now >= next_sample_s:
                samples.append((now, _rss_kb(links.pid)))
                next_sample_s += sample_s
            [(uploaded,)] = database.execute("select count(uploaded_at) from captures").fetchall()
            delivered = events.unique()
            if (delivered, uploaded) != moved:
                moved, moved_at = (delivered, uploaded), time.monotonic()
            if uploaded and first_upload is None:
                first_upload = now
            if delivered >= keeps:
                done_at.setdefault("mqtt", events.last_new_at - back)
            if uploaded >= keeps:
                done_at.setdefault("upload", now)
            # The links' own progress (their entries left), not the subscriber's: a subscriber that
            # reconnects late gets the events the broker kept for it in one burst.
            left = dict(database.execute("select link, count(*) from outbox group by link").fetchall())
            halfway = {link for link in ("mqtt", "upload") if 0 < left.get(link, 0) <= keeps / 2}
            if cut_s and halfway - cut_mid_drain:
                cuts.append(_cut(broker, server, back, database, keeps, cut_s))
                cut_mid_drain |= {link for link, count in cuts[-1]["left"].items() if 0 < count < keeps}
                moved_at = time.monotonic()
            # MQTT drains hundreds a second: watched closely until its half, so that it is cut there.
            is_mqtt_close = cut_s and "mqtt" not in cut_mid_drain and left.get("mqtt", 0) > keeps / 2
            time.sleep(FAST_TICK_S if is_mqtt_close else TICK_S)
    finally:
        database.close()
    if len(done_at) < 2:
        log.error("not drained: nothing moved for %g s (%d events, %d uploads)", stall_s, *moved)
    return {"drain": {"mqtt_s": _round(done_at.get("mqtt")), "upload_s": _round(done_at.get("upload")),
                      "first_event_s": _round(events.first_at - back if events.first_at else None),
                      "first_upload_s": _round(first_upload), "is_drained": len(done_at) == 2,
                      "cuts": cuts, "cut_mid_drain": sorted(cut_mid_drain)},
            "rss": memory_summary(samples)}


def _cut(broker: Broker, server: SeaweedServer, back: float, database, keeps: int, cut_s: float) -> dict:
    """Both servers down for ``cut_s`` (the store SIGKILLed, the broker stopped), then back; what each
    link had left to send of the keeps when they went."""
    at_s = time.monotonic() - back
    broker.stop()
    server.kill()
    left = dict(database.execute("select link, count(*) from outbox where key like 'keep:%' group by link").fetchall())
    left = {link: left.get(link, 0) for link in ("mqtt", "upload")}
    log.info("outage again for %g s, with %d of %d keeps' events and %d uploads left to send", cut_s, left["mqtt"],
             keeps, left["upload"])
    time.sleep(cut_s)
    _back(broker, server)
    return {"at_s": round(at_s, 1), "left": left, "back_s": round(time.monotonic() - back, 1)}


def _back(broker: Broker, server: SeaweedServer) -> None:
    """The store first (its start takes seconds), then the broker (at once): MQTT drains fast, and the
    run must be watching when it does, to cut it half-way."""
    server.start()
    broker.start()


def memory_summary(samples: list[tuple[float, int]]) -> dict:
    """RSS (MB) at the drain's start, its peak and end, and ``growth_mb``: the median of the last quarter's
    samples less the median of the first quarter's (the drain's duration cut in four)."""
    if len(samples) < 4:
        return {"samples": len(samples), "start_mb": None, "peak_mb": None, "end_mb": None, "growth_mb": None}
    end_s = samples[-1][0]
    first = [kb for at, kb in samples if at <= end_s / 4]
    last = [kb for at, kb in samples if at >= end_s * 3 / 4]
    return {"samples": len(samples), "start_mb": _mb(samples[0][1]), "peak_mb": _mb(max(kb for _, kb in samples)),
            "end_mb": _mb(samples[-1][1]), "first_quarter_median_mb": _mb(statistics.median(first)),
            "last_quarter_median_mb": _mb(statistics.median(last)),
            "growth_mb": _mb(statistics.median(last) - statistics.median(first))}


def _stop_links(links: subprocess.Popen) -> dict:
    links.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        code = links.wait(30)
    except subprocess.TimeoutExpired:
        links.kill()
        return {"exit": links.wait(), "seconds": None}
    return {"exit": code, "seconds": round(time.monotonic() - started, 1)}


def _check_alive(links: subprocess.Popen) -> None:
    if links.poll() is not None:
        raise BenchmarkError(f"appliance links exited ({links.returncode}): see its links.log (run with --work DIR "
                             "to keep it)")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _mb(kb: float) -> float:
    return round(kb / 1024, 1)


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.bench.outage", description=__doc__.splitlines()[0])
    parser.add_argument("--keeps", type=int, default=10_000, help="keeps queued during the outage (default 10000)")
    parser.add_argument("--images", type=Path, default=IMAGES, help=f"photos to make keeps of (default {IMAGES})")
    parser.add_argument("--cut-s", type=float, default=CUT_S, metavar="S",
                        help=f"how long the outage in the middle of the drain lasts (default {CUT_S:g} s)")
    parser.add_argument("--no-cut", action="store_true", help="no outage in the middle of the drain")
    parser.add_argument("--work", type=Path, default=None, help="work here and keep it (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the figures to FILE")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = run(arguments.keeps, arguments.images, None if arguments.no_cut else arguments.cut_s,
                     work=arguments.work)
    except BenchmarkError as e:
        print(f"python -m appliance.bench.outage: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(text)
    if arguments.json:
        arguments.json.write_text(text + "\n")
    for line in result["problems"]:
        print(f"python -m appliance.bench.outage: {line}", file=sys.stderr)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
