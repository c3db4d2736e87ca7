"""The store ``appliance bench-web`` serves: realistic capture rows, photo-like JPEGs, a config for it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image
from werkzeug.security import generate_password_hash

from appliance.bench.common import noisy_field
from appliance.config import Config, to_toml
from appliance.pipeline.writer import encode_jpeg
from appliance.storage.store import THUMBS, Store

PASSWORD = "bench-web"
LABELS = tuple(f"{latin} ({common})" for latin, common in (
    ("Parus major", "Great Tit"), ("Cyanistes caeruleus", "Eurasian Blue Tit"), ("Passer domesticus", "House Sparrow"),
    ("Erithacus rubecula", "European Robin"), ("Turdus merula", "Eurasian Blackbird"),
    ("Fringilla coelebs", "Common Chaffinch"), ("Pica pica", "Eurasian Magpie"),
    ("Columba palumbus", "Common Wood-Pigeon"),
    ("Sturnus vulgaris", "European Starling"), ("Carduelis carduelis", "European Goldfinch"),
    ("Sitta europaea", "Eurasian Nuthatch"), ("Dendrocopos major", "Great Spotted Woodpecker"),
    ("Garrulus glandarius", "Eurasian Jay"), ("Prunella modularis", "Dunnock"),
    ("Chloris chloris", "European Greenfinch"),
    ("Aegithalos caudatus", "Long-tailed Tit"), ("Troglodytes troglodytes", "Eurasian Wren"),
    ("Corvus corone", "Carrion Crow"), ("Sciurus vulgaris", "Red Squirrel"), ("Bubo bubo", "Eurasian Eagle-Owl")))
RARE_LABEL = LABELS[-1]  # every 2,000th capture: a filter that matches 0.05 % of the store
START = datetime(2026, 9, 1, tzinfo=timezone.utc)
SPAN_DAYS = 60
AUTH = {"Authorization": "Basic " + base64.b64encode(f"bench:{PASSWORD}".encode()).decode()}


def fake_rows(count: int, seed: int, files):
    """``count`` capture rows, oldest first, one per millisecond at most, for ``insert_all``.

    ``files(captured_at, label)`` gives ``(image_path, thumb_path, bytes, sha256, width, height)``."""
    rng = random.Random(seed)
    span_ms = SPAN_DAYS * 86_400_000
    weights = [1 / (rank + 1) for rank in range(len(LABELS) - 1)]  # a few species are most of the visits
    offsets, last = [], -1
    for offset in sorted(rng.randrange(span_ms) for _ in range(count)):
        last = max(offset, last + 1)  # distinct times, so file names are distinct as on the device
        offsets.append(last)
    for i, offset in enumerate(offsets):
        at = (START + timedelta(milliseconds=offset)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        label = RARE_LABEL if i % 2000 == 1000 else rng.choices(LABELS[:-1], weights)[0]
        is_audit, age = rng.random() < 0.05, i / count  # age 0: the oldest
        score = round(rng.uniform(0.05, 0.5) if is_audit else 0.5 + 0.49 * rng.random() ** 0.5, 3)
        image_path, thumb_path, size, sha256, width, height = files(at, label)
        yield {"captured_at": at, "clock_source": "ntp", "label": label, "score": score,
               "top_k": json.dumps([[label, score], ["background", round(1 - score, 3)]]),
               "kind": "audit" if is_audit else "match", "reason": "audit" if is_audit else "match",
               "model_name": "inat-bird", "model_sha256": "ab" * 32, "backend": "cpu", "inference_ms": 8.0,
               "source": "picamera2", "image_path": image_path, "thumb_path": thumb_path, "width": width,
               "height": height, "bytes": size, "sha256": sha256, "starred": int(rng.random() < 0.01),
               "synced_at": at if age < 0.6 and rng.random() < 0.9 else None,
               "offloaded_at": at if age < 0.2 and rng.random() < 0.5 else None, "missing": 0,
               "corrected_label": rng.choice(LABELS[:-1]) if rng.random() < 0.02 else None}


def insert_rows(store: Store, rows) -> float:
    """Insert rows in one transaction; returns the seconds it took."""
    started = time.perf_counter()
    with store.db.atomic():
        store.db["captures"].insert_all(rows, batch_size=1000)
    return time.perf_counter() - started


def write_samples(data_dir: Path, count=8):
    """A few real small images and thumbnails in ``data_dir`` that every fake row points at (the gallery
    only links them): ``(image_path, thumb_path, bytes, sha256, width, height)`` of each."""
    samples = []
    for i, data in enumerate(jpeg_variants(count, (320, 240))):
        image_path = Path("2026", "09", "01", f"sample-{i}.jpg")
        thumb = encode_jpeg(Image.open(io.BytesIO(data)).resize((160, 120)), 80)
        for relative, content in ((image_path, data), (Path(THUMBS) / image_path, thumb)):
            (data_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (data_dir / relative).write_bytes(content)
        samples.append((str(image_path), str(Path(THUMBS) / image_path), len(data),
                        hashlib.sha256(data).hexdigest(), 320, 240))
    return samples


def jpeg_variants(count: int, size=(640, 480)) -> list[bytes]:
    """Photo-like JPEGs of 20-40 KB: smooth colour fields plus sensor-like noise, each different."""
    variants = []
    for seed in range(count):
        pixels = noisy_field(np.random.default_rng(seed), size, 1.5 + 1.5 * seed / max(1, count - 1))
        variants.append(encode_jpeg(Image.fromarray(pixels), 85))
    return variants


def bench_config(work: Path) -> Config:
    (work / "run").mkdir(parents=True, exist_ok=True)
    return Config().replace(storage={"data_dir": str(work / "data"), "min_free_bytes": 0},
                            status={"runtime_dir": str(work / "run")},
                            web={"host": "127.0.0.1", "password_hash": generate_password_hash(PASSWORD)})


def write_config(work: Path, config: Config) -> Path:
    path = work / "appliance.toml"
    path.write_text(to_toml(config))
    return path
