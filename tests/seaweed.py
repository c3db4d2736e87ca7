"""Fixtures for tests against a real S3-compatible store: SeaweedFS on 127.0.0.1 (``bench.seaweed``).

Import them into a test module, as ``browser`` is imported by ``test_browser``::

    from seaweed import s3_bucket, seaweed_s3  # noqa: F401 (fixtures)

* ``seaweed_s3`` (module-scoped): the running ``SeaweedServer``, stopped after the module's tests.
  A test may ``stop()``, ``kill()`` and ``start()`` it; the next test's ``s3_bucket`` starts it again
  if it was left stopped.
* ``s3_bucket``: a new, empty bucket of that server for one test; its name.
"""

from __future__ import annotations

import itertools

import pytest

from appliance.bench.seaweed import SeaweedServer

_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def seaweed_s3(tmp_path_factory):
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(seaweed_s3):
    if not seaweed_s3.is_running():
        seaweed_s3.start()
    return seaweed_s3.create_bucket(f"test-{next(_numbers)}")


def objects(server: SeaweedServer, bucket: str) -> dict[str, bytes]:
    """Every object in ``bucket``: key → bytes."""
    client = server.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}
