"""The upload link: keeps and their sidecars to a real SeaweedFS on 127.0.0.1 through the links service,
verified by SHA-256 before they are marked; outages, a missing bucket, refused keys, a damaged file, the
bandwidth cap; and retention counting an uploaded item as taken off. Real boto3, store and photos."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig
from conftest import IMAGES
from PIL import Image
from seaweed import objects, s3_bucket, seaweed_s3  # noqa: F401 (fixtures)

from appliance.config import Config
from appliance.links.service import LinksService, read_links
from appliance.links.upload import UploadLink, stored_sha256
from appliance.storage import retention
from appliance.storage.best_n import best_n_scopes
from appliance.storage.images import kept_jpeg
from appliance.storage.store import Store

DAY = "2026-11-25"


def record(label, second, **fields):
    return {"captured_at": f"{DAY}T10:15:{second:02d}.123Z", "clock_source": "ntp", "label": label, "score": 0.8,
            "top_k": json.dumps([[label, 0.8], ["other", 0.1]]), "kind": "match", "reason": "match",
            "model_name": "inat-bird", "model_sha256": "ab" * 32, "backend": "cpu", "inference_ms": 9.5,
            "source": "parrot.jpg", "width": 0, "height": 0, **fields}


def keep(store, photo="parrot.jpg", label="Ara macao (Scarlet Macaw)", second=0, scale=1.0, links=("upload",),
         **fields):
    """A real keep of a shared photo (a JPEG carrying its record, as the writer makes), through ``Store.add``."""
    image = Image.open(IMAGES / photo).convert("RGB")
    image = image.resize((int(image.width * scale), int(image.height * scale)))
    rec = record(label, second, width=image.width, height=image.height, **fields)
    return store.add(rec, kept_jpeg(image, 95, rec), b"thumb", links=links)


def upload_config(tmp_path, server, bucket, **upload):
    return Config().replace(
        storage={"data_dir": str(tmp_path / "data")}, status={"runtime_dir": str(tmp_path / "run")},
        system={"hostname": "trail-cam-3"},
        upload={"endpoint": server.endpoint, "bucket": bucket, "access_key": server.access_key,
                "secret_key": server.secret_key, **upload})


def links_service(config) -> LinksService:
    """The links service with just the upload link, started as ``run()`` starts it."""
    Path(config.status.runtime_dir).mkdir(exist_ok=True)
    service = LinksService(config, links=[UploadLink(config)])
    for link in service.links:
        link.start()
        link.catch_up(service.outbox, service.store)
    return service


def drain(service, timeout_s=20.0):
    until = time.monotonic() + timeout_s
    while service.outbox.depth()["upload"] and time.monotonic() < until:
        service.step()
        time.sleep(0.05)
    assert service.outbox.depth()["upload"] == 0, service.state()


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "data")
    yield store
    store.close()


def test_keeps_go_to_their_keys_with_their_bytes_and_sidecars_verified_then_marked(tmp_path, seaweed_s3, s3_bucket,
                                                                                     store):
    config = upload_config(tmp_path, seaweed_s3, s3_bucket, prefix="fleet/north")
    macaw = keep(store)
    owl = keep(store, "bird.bmp", "Strix varia (Barred Owl)", 1, event_id="e1" * 16, event_frame=4,
               box="[0.1,0.2,0.5,0.6]", detector_label="bird", detector_score=0.9, detector_name="ssd",
               detector_sha256="cd" * 32)
    before = keep(store, "cat_720p.jpg", "Felis catus", 2, links=())  # kept before upload was configured
    store.relabel(macaw, "Ara chloropterus")
    service = links_service(config)
    drain(service)

    rows = {row["id"]: row for row in store.rows()}
    stored = objects(seaweed_s3, s3_bucket)
    assert sorted(stored) == sorted(f"fleet/north/trail-cam-3/2026/11/25/{rows[i]['image_path'].split('/')[-1]}{ext}"
                                    for i in (macaw, owl, before) for ext in ("", ".json"))
    for capture_id, row in rows.items():
        key = f"fleet/north/trail-cam-3/2026/11/25/{row['image_path'].split('/')[-1]}"
        assert stored[key] == (store.data_dir / row["image_path"]).read_bytes()
        assert hashlib.sha256(stored[key]).hexdigest() == row["sha256"] and row["uploaded_at"]
        side = json.loads(stored[key + ".json"])
        assert side["id"] == capture_id and side["sha256"] == row["sha256"] and side["bytes"] == row["bytes"]
        assert side["captured_at"] == row["captured_at"] and side["device"] == "trail-cam-3"
    assert json.loads(stored[next(k for k in stored if k.endswith("macaw.jpg.json"))])["label"] == "Ara chloropterus"
    owl_side = json.loads(stored[next(k for k in stored if "strix" in k and k.endswith(".json"))])
    assert owl_side["box"] == [0.1, 0.2, 0.5, 0.6] and owl_side["event_id"] == "e1" * 16
    assert owl_side["top_k"][0][0] == "Strix varia (Barred Owl)" and owl_side["detector_label"] == "bird"
    state = read_links(config.status.runtime_dir)["links"]["upload"]
    assert state["connected"] and state["sent"] == 3 and state["queued"] == 0 and state["verified_by"] == "checksum"

    # Sent again (at least once): the same keys, one object each; catching up queues nothing uploaded.
    service.outbox.enqueue("upload", f"keep:{owl}", capture_id=owl)
    drain(service)
    service.links[0].catch_up(service.outbox, service.store)
    assert service.outbox.depth()["upload"] == 0
    assert sorted(objects(seaweed_s3, s3_bucket)) == sorted(stored)
    service.close()


def test_the_store_killed_mid_upload_leaves_keeps_queued_unmarked_then_all_go_once(tmp_path, seaweed_s3, s3_bucket,
                                                                                    store):
    config = upload_config(tmp_path, seaweed_s3, s3_bucket, max_bytes_per_s=1_000_000)
    first = keep(store, scale=0.2)
    service = links_service(config)
    drain(service)
    # Both large: the second is read ahead, so both are on the way (sharing the cap) when the store dies.
    big, last = (keep(store, "kite_and_cold.jpg", label, second, scale=1.5)
                 for label, second in (("Milvus milvus", 1), ("Milvus migrans", 2)))
    assert store.get(big)["bytes"] > 600_000  # over 0.6 s at the cap: the store dies 0.4 s into its body
    killed = threading.Event()

    def kill_during_big_image(request, **_):
        if request.url.endswith("milvus-milvus.jpg") and not killed.is_set():
            killed.set()
            threading.Timer(0.4, seaweed_s3.kill).start()

    service.links[0].client.meta.events.register("before-send.s3.PutObject", kill_during_big_image)
    for _ in range(4):
        service.step()
    assert killed.is_set() and not seaweed_s3.is_running()
    state = service.state()["links"]["upload"]
    assert not state["connected"] and "cannot reach the object store" in state["problem"] and state["queued"] == 2
    assert [r["id"] for r in store.rows() if r["uploaded_at"]] == [first]

    seaweed_s3.start()
    drain(service)
    rows = store.rows()
    assert all(r["uploaded_at"] for r in rows) and {r["id"] for r in rows} == {first, big, last}
    stored = objects(seaweed_s3, s3_bucket)
    assert len(stored) == 6
    for row in rows:
        key = f"trail-cam-3/2026/11/25/{row['image_path'].split('/')[-1]}"
        assert hashlib.sha256(stored[key]).hexdigest() == row["sha256"]
    state = service.state()["links"]["upload"]
    assert state["connected"] and state["failed"] == 1  # what was on the way went again, no stale failure
    service.close()


def test_a_bucket_that_does_not_exist_is_said_in_the_state_and_nothing_is_marked(tmp_path, seaweed_s3, s3_bucket,
                                                                                   store):
    config = upload_config(tmp_path, seaweed_s3, "no-such-bucket")
    keep(store)
    service = links_service(config)
    service.step()
    state = read_links(config.status.runtime_dir)["links"]["upload"]
    expected = f"upload.bucket 'no-such-bucket' does not exist at {seaweed_s3.endpoint}: create it there"
    assert state["problem"].startswith(expected) and state["last_error"]["error"].startswith(expected)
    assert not state["connected"] and state["queued"] == 1
    assert not any(r["uploaded_at"] for r in store.rows())
    service.close()


def test_keys_that_may_not_write_are_named_in_the_state(tmp_path, seaweed_s3, s3_bucket, store):
    config = upload_config(tmp_path, seaweed_s3, s3_bucket, access_key=seaweed_s3.reader_key,
                           secret_key=seaweed_s3.reader_secret)  # may read and list, not write
    keep(store)
    service = links_service(config)
    service.step()
    problem = service.state()["links"]["upload"]["problem"]
    assert "AccessDenied" in problem and "check upload.access_key and upload.secret_key" in problem
    assert not any(r["uploaded_at"] for r in store.rows()) and objects(seaweed_s3, s3_bucket) == {}
    service.close()


def test_an_image_changed_on_the_card_after_its_keep_is_refused_and_not_marked(tmp_path, seaweed_s3, s3_bucket,
                                                                               store):
    config = upload_config(tmp_path, seaweed_s3, s3_bucket)
    damaged, fine = keep(store), keep(store, "cat_720p.jpg", "Felis catus", 1)
    path = store.data_dir / store.get(damaged)["image_path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    service = links_service(config)
    for _ in range(3):
        service.step()
    state = service.state()["links"]["upload"]
    assert state["last_error"]["error"].startswith(f"{path}: its bytes differ from the SHA-256 recorded")
    assert state["connected"] and state["queued"] == 1  # one keep's trouble: the link stays up
    assert [r["id"] for r in store.rows() if r["uploaded_at"]] == [fine]
    assert [k for k in objects(seaweed_s3, s3_bucket) if not k.endswith(".json")] == \
        [f"trail-cam-3/2026/11/25/{store.get(fine)['image_path'].split('/')[-1]}"]
    service.close()


def test_a_body_damaged_on_the_way_is_refused_by_the_store_and_goes_again_intact(tmp_path, seaweed_s3, s3_bucket,
                                                                                  store):
    """The body is sent unsigned (UNSIGNED-PAYLOAD): the signed x-amz-checksum-sha256 is what the store checks it by."""
    config = upload_config(tmp_path, seaweed_s3, s3_bucket)
    macaw = keep(store, scale=0.2)
    service = links_service(config)
    sent = []

    def damage_the_first_image(request, **_):
        sent.append(request.headers["X-Amz-Content-SHA256"])
        if len(sent) == 1:
            body = bytearray(request.body.read())  # botocore sends bytes as a file
            body[len(body) // 2] ^= 0xFF
            request.body = bytes(body)

    service.links[0].client.meta.events.register("before-send.s3.PutObject", damage_the_first_image)
    service.step()
    state = service.state()["links"]["upload"]
    assert "arrived damaged, the store refused it (BadDigest" in state["last_error"]["error"], state
    assert state["connected"] and state["queued"] == 1  # one keep's trouble: the link stays up
    assert not store.get(macaw)["uploaded_at"] and objects(seaweed_s3, s3_bucket) == {}
    drain(service)  # its backoff over, it goes again
    row, key = store.get(macaw), f"trail-cam-3/2026/11/25/{store.get(macaw)['image_path'].split('/')[-1]}"
    assert row["uploaded_at"] and hashlib.sha256(objects(seaweed_s3, s3_bucket)[key]).hexdigest() == row["sha256"]
    assert set(sent) == {b"UNSIGNED-PAYLOAD"} and len(sent) == 3  # the damaged image, then image and sidecar
    service.close()


def test_the_bandwidth_cap_paces_a_real_upload(tmp_path, seaweed_s3, s3_bucket, store):
    config = upload_config(tmp_path, seaweed_s3, s3_bucket, max_bytes_per_s=1_000_000)
    big = keep(store, "kite_and_cold.jpg", "Milvus milvus", scale=3.0)  # 4056×2700, a 12 MP camera's frame
    size = store.get(big)["bytes"]
    assert size > 2_000_000
    service = links_service(config)
    started = time.monotonic()
    drain(service)
    took_s = time.monotonic() - started
    assert took_s >= 0.9 * size / 1_000_000, took_s
    assert store.get(big)["uploaded_at"]
    service.close()


def test_a_store_that_reports_no_checksum_is_verified_by_reading_the_object_back(seaweed_s3, s3_bucket):
    plain = boto3.client("s3", endpoint_url=seaweed_s3.endpoint, region_name="us-east-1",
                         aws_access_key_id=seaweed_s3.access_key, aws_secret_access_key=seaweed_s3.secret_key,
                         config=BotoConfig(s3={"addressing_style": "path"},
                                           request_checksum_calculation="when_required"))  # no checksum unasked
    image = io.BytesIO()
    Image.open(IMAGES / "parrot.jpg").save(image, "JPEG")
    plain.put_object(Bucket=s3_bucket, Key="no-checksum.jpg", Body=image.getvalue())  # no x-amz-checksum-*
    sha256 = hashlib.sha256(image.getvalue()).hexdigest()
    assert stored_sha256(plain, s3_bucket, "no-checksum.jpg") == (sha256, "read-back")
    plain.put_object(Bucket=s3_bucket, Key="checksum.jpg", Body=image.getvalue(), ChecksumAlgorithm="SHA256")
    assert stored_sha256(plain, s3_bucket, "checksum.jpg") == (sha256, "checksum")  # HEAD says it


def test_a_keep_relabelled_after_its_upload_was_read_ahead_goes_again_as_it_is_now(tmp_path, seaweed_s3, s3_bucket,
                                                                                  store):
    config = upload_config(tmp_path, seaweed_s3, s3_bucket)
    first, second = keep(store, scale=0.2), keep(store, "bird.bmp", "Strix varia (Barred Owl)", 1, scale=0.2)
    service = links_service(config)
    link, [first_entry, second_entry] = service.links[0], service.outbox.due("upload")
    link.send(first_entry, store.get(first), store)  # as the service sends: the second is read ahead meanwhile
    store.relabel(second, "Strix nebulosa")
    link.send(second_entry, store.get(second), store)
    sidecar_key = f"trail-cam-3/2026/11/25/{store.get(second)['image_path'].split('/')[-1]}.json"
    assert json.loads(objects(seaweed_s3, s3_bucket)[sidecar_key])["label"] == "Strix nebulosa"
    assert store.get(first)["uploaded_at"] and store.get(second)["uploaded_at"]
    service.close()


@pytest.mark.parametrize("is_uploaded_taken_off", [True, False])
def test_with_evict_uploaded_an_uploaded_item_gives_way_like_a_synced_one(tmp_path, is_uploaded_taken_off):
    store = Store(tmp_path / "data", is_uploaded_taken_off=is_uploaded_taken_off)
    uploaded, synced, neither = (keep(store, scale=0.2, second=s, links=()) for s in range(3))
    store.mark_uploaded(uploaded, "2026-11-26T00:00:00Z")
    store.mark_synced({synced: store.get(synced)["sha256"]}, "2026-11-26T00:00:00Z")
    size = store.get(uploaded)["bytes"]
    plan = retention.plan_eviction(store.retention_candidates(), size, "stop")
    assert plan == (retention.Plan((uploaded,)) if is_uploaded_taken_off else retention.Plan((synced,)))
    [(_, rivals), _] = best_n_scopes(store, "Ara macao (Scarlet Macaw)", f"{DAY}T12:00:00Z", 3, 0)
    assert {r.id: r.is_taken_off for r in rivals} == {uploaded: is_uploaded_taken_off, synced: True, neither: False}
    store.close()


def test_the_links_process_killed_mid_upload_loses_nothing_and_marks_nothing_not_in_the_bucket(
        tmp_path, seaweed_s3, s3_bucket, cli_env):
    """`appliance links` as its own process, SIGKILLed while it uploads at 1 MB/s, then started again: every
    keep marked uploaded is in the bucket with its SHA-256 at every moment, and in the end all are, once."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import REPO

    from appliance.config import to_toml

    config = upload_config(tmp_path, seaweed_s3, s3_bucket, max_bytes_per_s=1_000_000)
    store = Store(config.storage.data_dir)
    ids = [keep(store, second=n, scale=2.0) for n in range(6)]  # ~0.5 MB each: ~3 s of uploads in all
    path = tmp_path / "appliance.toml"
    path.write_text(to_toml(config))
    command = [sys.executable, "-m", "appliance", "links", "--config", str(path)]

    def checked():
        """The ids marked uploaded, each checked against the bucket (present, with the keep's SHA-256)."""
        client = seaweed_s3.client()
        marked = [r for r in store.rows() if r["uploaded_at"]]
        for row in marked:
            key = f"trail-cam-3/2026/11/25/{Path(row['image_path']).name}"
            assert stored_sha256(client, s3_bucket, key)[0] == row["sha256"], key
        return {r["id"] for r in marked}

    first = subprocess.Popen(command, cwd=REPO, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not checked() and time.monotonic() < deadline:  # kill it once some, not all, are up
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    partly = checked()
    assert partly and partly != set(ids), partly
    again = subprocess.Popen(command, cwd=REPO, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while checked() != set(ids):
            assert time.monotonic() < deadline and again.poll() is None, again.stderr.read().decode()[-2000:]
            time.sleep(0.1)
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(20)
    keys = objects(seaweed_s3, s3_bucket)
    assert len([k for k in keys if k.endswith(".jpg")]) == len(ids) == len([k for k in keys if k.endswith(".json")])
    [[waiting]] = store.select("select count(*) from outbox where link = 'upload'")
    assert waiting == 0
    store.close()


def test_a_keep_relabelled_after_its_upload_has_its_sidecar_sent_again_and_not_its_image(tmp_path, seaweed_s3,
                                                                                       s3_bucket, store):
    config = upload_config(tmp_path, seaweed_s3, s3_bucket)
    owl = keep(store, "bird.bmp", "Strix varia (Barred Owl)", scale=0.2)
    service = links_service(config)
    drain(service)
    sidecar_key = f"trail-cam-3/2026/11/25/{store.get(owl)['image_path'].split('/')[-1]}.json"
    assert json.loads(objects(seaweed_s3, s3_bucket)[sidecar_key])["label"] == "Strix varia (Barred Owl)"
    puts = []
    service.links[0].client.meta.events.register("before-call.s3.PutObject",
                                                 lambda params, **_: puts.append(params["url_path"]))
    store.relabel(owl, "Strix nebulosa")
    assert service.outbox.due("upload")[0].key == f"sidecar:{owl}"
    drain(service)
    assert json.loads(objects(seaweed_s3, s3_bucket)[sidecar_key])["label"] == "Strix nebulosa"
    assert len(puts) == 1 and puts[0].endswith(".json"), puts  # the image stays as it was
    store.relabel(owl, None)  # the correction taken back: the sidecar says the model's label again
    drain(service)
    assert json.loads(objects(seaweed_s3, s3_bucket)[sidecar_key])["label"] == "Strix varia (Barred Owl)"
    service.close()


def test_a_relabel_made_while_its_upload_was_under_way_queues_the_sidecar_when_it_is_marked(store):
    owl = keep(store, "bird.bmp", "Strix varia (Barred Owl)", scale=0.2, links=())
    uploaded = store.get(owl)  # the row the upload read
    store.relabel(owl, "Strix nebulosa")  # not yet marked: the relabel itself queues nothing
    assert store.db.execute("select count(*) from outbox").fetchone()[0] == 0
    store.mark_uploaded(owl, "2026-11-25T10:16:00Z", uploaded["corrected_label"])
    assert [r[0] for r in store.db.execute("select key from outbox")] == [f"sidecar:{owl}"]
    store.db.execute("delete from outbox")
    store.mark_uploaded(owl, "2026-11-25T10:17:00Z", "Strix nebulosa")  # it carried the relabel: nothing more
    assert store.db.execute("select count(*) from outbox").fetchone()[0] == 0
