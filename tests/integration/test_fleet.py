"""The fleet store (issue 16): two nodes -- two SNAPSTART_HOMEs with their own L1/L2
-- sharing one bucket on moto's S3 server on loopback (the one S3 implementation
that installs here; the code speaks the S3 API to any endpoint). A version published
on one node restores on the other without running init."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from snapstart.config import FunctionConfig, Settings
from snapstart.errors import FunctionNotFoundError, PublishError, StoreError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import MotoServer  # noqa: E402

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"
KEY = "5e" * 32


@pytest.fixture
def moto(monkeypatch):
    server = MotoServer()
    server.client("s3").create_bucket(Bucket="snaps")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("SNAPSTART_STORE_KEY", KEY)
    monkeypatch.setenv("SNAPSTART_STORE_TIMEOUT_S", "3")
    yield server
    server.stop()


@pytest.fixture
def nodes(moto, managers):
    """nodes(n) -> n managers, each with its own home and shm, one bucket."""
    made: list[Path] = []

    def make(n: int, url: str = "s3://snaps/fleet"):
        out = []
        for _ in range(n):
            base = Path(tempfile.mkdtemp(prefix="snapstart-node-", dir="/tmp"))
            os.chmod(base, 0o711)
            made.append(base)
            shm = Path("/dev/shm") / f"snapstart-node-{uuid.uuid4().hex[:12]}"
            made.append(shm)
            settings = Settings.from_env({**os.environ, "SNAPSTART_HOME": str(base / "home"),
                                          "SNAPSTART_SHM": str(shm), "SNAPSTART_STORE": url})
            out.append(managers(settings))
        return out

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def _config(name: str) -> FunctionConfig:
    return FunctionConfig(name=name, handler="app.handler")


def test_published_on_one_node_restored_on_another_without_init(nodes, moto):
    a, b = nodes(2)
    pub = a.publish(FUNCTIONS / "hello", _config("hello"))
    assert pub.version == 1
    keys = [o["Key"] for o in moto.client("s3").list_objects_v2(Bucket="snaps")["Contents"]]
    assert "fleet/functions/hello/versions/1/version.json" in keys
    assert any(k.startswith("fleet/chunks/") for k in keys)
    # node b has never seen the function: it finds it in the bucket, restores, no init
    first = b.invoke("hello", b'{"n": 1}')
    body = json.loads(first.payload)
    assert first.start_type == "restored" and body["function_version"] == "1"
    assert b"hello: init ran" not in first.logs
    stats = b.store.l1_stats()
    assert stats["s3_chunks_fetched"] > 0 and stats["s3_bytes_down"] > 0
    fetched = stats["s3_chunks_fetched"]
    # the next restore on b uses its own caches
    again = b.invoke("hello", force_new=True)
    assert again.start_type == "restored"
    assert b.store.l1_stats()["s3_chunks_fetched"] == fetched
    # same identity on both nodes (the snapshot's credentials)
    assert b.registry.resolve("hello").uid == a.registry.resolve("hello").uid
    # aliases set on one node are seen by the other
    a.registry.set_alias("hello", "live", 1)
    b.registry.sync("hello", force=True)
    assert b.registry.resolve("hello", "live").version == "1"
    # a second version, after a one-line change, shares chunks: only new ones go up
    up_before = a.store.l1_stats()["s3_bytes_up"]
    a.publish(FUNCTIONS / "hello", _config("hello"))
    uploaded = a.store.l1_stats()["s3_bytes_up"] - up_before
    assert 0 < uploaded < sum(r["stored_bytes"] for r in a.store.stats() if r["version"] == 2)
    b.registry.sync("hello", force=True)
    assert b.invoke("hello", qualifier="2").start_type == "restored"


def test_two_nodes_publishing_at_once_get_distinct_versions(nodes):
    a, b = nodes(2)
    results: dict[str, int] = {}
    errors: list[BaseException] = []

    def publish(node, label):
        try:
            results[label] = node.publish(FUNCTIONS / "hello", _config("race")).version
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(n, l)) for n, l in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(results.values()) == [1, 2]
    # and the claims themselves, many at once
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: a.store.claim_version("claims"), range(16)))
    assert sorted(got) == list(range(1, 17))


def test_endpoint_down_publish_fails_cleanly_cached_versions_keep_serving(nodes, moto):
    a, b = nodes(2)
    a.publish(FUNCTIONS / "hello", _config("hello"))
    assert b.invoke("hello").start_type == "restored"       # b has it cached now
    moto.stop()
    with pytest.raises((StoreError, PublishError)) as info:
        a.publish(FUNCTIONS / "hello", _config("hello"))
    assert "cannot reach" in str(info.value.message)
    assert a.registry.versions("hello") == [1]           # nothing half-written
    assert a.store.local.versions("hello") == [("hello", 1)]
    # both nodes keep serving what they hold, restored and warm
    assert b.invoke("hello", force_new=True).start_type == "restored"
    assert a.invoke("hello").start_type in ("restored", "warm")
    # an unknown function is still a clear not-found
    with pytest.raises(FunctionNotFoundError):
        b.invoke("never-published")


def test_bad_bucket_credentials_and_corrupt_chunk(nodes, moto, monkeypatch):
    (missing,) = nodes(1, url="s3://no-such-bucket/x")
    with pytest.raises((StoreError, PublishError)) as info:
        missing.publish(FUNCTIONS / "hello", _config("hello"))
    assert "no-such-bucket not found" in info.value.message
    a, b = nodes(2)
    a.publish(FUNCTIONS / "hello", _config("hello"))
    # damage one chunk in the bucket: node b refuses it and falls back to a cold start
    s3 = moto.client("s3")
    chunk = next(o["Key"] for o in s3.list_objects_v2(Bucket="snaps", Prefix="fleet/chunks/")
                 ["Contents"])
    s3.put_object(Bucket="snaps", Key=chunk, Body=b"not a chunk")
    result = b.invoke("hello", force_new=True)      # every chunk is this version's
    assert result.function_error is None and result.start_type == "cold"
    assert any("unusable" in note and "chunk" in note for note in result.notes)
    digest = chunk.rsplit("/", 1)[1].removesuffix(".zst")
    assert b.store.local.chunks.stored_size(digest) is None    # not kept
    # no credentials at all: a clear error (moto accepts any key, so wrong keys
    # cannot be shown here; the code maps AccessDenied/InvalidAccessKeyId the same way)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    from snapstart.store.s3 import S3Bucket
    with pytest.raises(StoreError) as info:
        S3Bucket("s3://snaps/fleet").check()
    assert "no AWS credentials" in info.value.message


def test_encrypted_fleet_keeps_no_plaintext_code_or_pages_in_the_bucket(nodes, moto,
                                                                      monkeypatch):
    monkeypatch.setenv("SNAPSTART_ENCRYPTION_KEY", "7c" * 32)
    a, b = nodes(2, url="s3://snaps/sealed")
    a.publish(FUNCTIONS / "hello", _config("hello"))
    first = b.invoke("hello")
    assert first.start_type == "restored" and b"hello: init ran" not in first.logs
    s3 = moto.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="snaps", Prefix="sealed/")["Contents"]]
    assert any(k.startswith("sealed/trees/") for k in keys)
    for key in keys:
        body = s3.get_object(Bucket="snaps", Key=key)["Body"].read()
        assert b"hello: init ran" not in body and b"def handler" not in body, key
    # a second version with the same code uploads no code tree again
    before = a.store.bucket.bytes_up
    a.publish(FUNCTIONS / "hello", _config("hello"))
    trees = [k for k in (o["Key"] for o in s3.list_objects_v2(
        Bucket="snaps", Prefix="sealed/trees/")["Contents"])]
    assert len(trees) == 1 and a.store.bucket.bytes_up > before
