"""A real `appliance run` killed with SIGKILL while writing keeps loses nothing and leaves no lie."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import IMAGES, REPO

from appliance.config import to_toml
from appliance.pipeline.writer import thumbnail_of_file
from appliance.storage.store import Store


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_rows", [3, 12, 25])
def test_sigkill_while_writing_keeps_leaves_every_row_with_a_complete_matching_file(
        tmp_path, make_config, cli_env, kill_after_rows):
    birds = tmp_path / "birds"
    birds.mkdir()
    for name in ("bird.bmp", "parrot.jpg"):
        (birds / name).write_bytes((IMAGES / name).read_bytes())
    # Every frame is a bird and is kept: the writer is busy the whole time it is killed.
    config = make_config(images=birds, camera={"replay_loop": True}, storage={"jpeg_quality": 95})
    config_path = tmp_path / "appliance.toml"
    config_path.write_text(to_toml(config))
    data = tmp_path / "data"

    child = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(config_path)],
                             env=cli_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _rows(data) < kill_after_rows:
            assert child.poll() is None, "appliance run exited early"
            assert time.monotonic() < deadline, "no keeps were written"
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(10)
    files_before = sorted(p.relative_to(data) for p in data.glob("20*/**/*") if p.is_file())

    store = Store(data)
    report = store.reconcile(thumbnail=thumbnail_of_file)
    rows = store.rows()
    assert len(rows) >= kill_after_rows
    for row in rows:
        assert not row["missing"]
        content = (data / row["image_path"]).read_bytes()
        assert hashlib.sha256(content).hexdigest() == row["sha256"]
        assert (data / row["thumb_path"]).is_file()
    # Every file that was on disk is still there: indexed, or set aside in quarantine, never deleted;
    # a temp file is either completed (renamed into place and indexed) or quarantined.
    indexed = {row["image_path"] for row in rows}
    temps = [f for f in files_before if f.name.endswith(".tmp")]
    for relative in files_before:
        if relative not in temps:
            assert str(relative) in indexed or (data / "quarantine" / relative).is_file()
    for temp in temps:
        assert (data / "quarantine" / temp).is_file() or report.recovered[str(temp)] in indexed
    # No thumbnail is left without its row: each is some row's, or in quarantine.
    thumbs = {str(p.relative_to(data)) for p in (data / "thumbs").glob("**/*") if p.is_file()}
    assert thumbs == {row["thumb_path"] for row in rows}
    store.close()


def _rows(data):
    try:
        with sqlite3.connect(f"file:{data / 'appliance.db'}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("select count(*) from captures").fetchone()[0]
    except sqlite3.Error:
        return 0
