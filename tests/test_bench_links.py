"""``appliance bench-links`` runs end to end against a real Mosquitto it starts itself (tiny figures)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_bench_links_times_every_event_and_drains_a_backlog_with_none_missing_or_repeated(cli_env):
    done = subprocess.run([sys.executable, "-m", "appliance", "bench-links", "--keeps", "10", "--rate", "50",
                           "--backlog", "60"], cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["latency_ms"]["n"] == 10 and 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p95"]
    assert result["backlog"] == 60 and result["missing"] == 0 and result["repeated"] == 0
    assert result["backlog_drain_s"] > 0 and result["broker"].startswith("mosquitto on 127.0.0.1")
