"""Object sources against real files and a real SeaweedFS: listing, pagination, ranged reads, odd
key names, untrusted keys and URI parsing."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bloodnet_ops.records import ObjectRef
from bloodnet_ops.storage import LocalSource, S3Source, open_source, s3_client, upload_folder

#: Keys no code may read meaning into: spaces, unicode, no extension, deep nesting, URL-special
#: characters, and a name that looks like a path but is a plain object.
ODD_KEYS = [
    "with space/slice 001.dcm",
    "ünïcødé/Kopf CT – Schädel/图像.dcm",
    "no_extension",
    "a/b/c/d/e/f/g/h/i/j/deep.dcm",
    "plus+and%percent&amp=eq/obj",
    "dots.in.name.v2.DCM",
]


def _payload(i: int, size: int = 300) -> bytes:
    return bytes((i * 7 + j) % 256 for j in range(size))


# ---------------------------------------------------------------------------------------------
# LocalSource


def _write_tree(root: Path) -> dict[str, bytes]:
    files = {k: _payload(i) for i, k in enumerate(ODD_KEYS)}
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_local_lists_every_file_with_relative_posix_keys(tmp_path: Path) -> None:
    files = _write_tree(tmp_path)
    refs = list(LocalSource(tmp_path).list())
    assert sorted(r.key for r in refs) == sorted(files)
    assert all(isinstance(r, ObjectRef) and r.size == len(files[r.key]) for r in refs)
    assert len({r.etag for r in refs}) >= 1
    src = LocalSource(tmp_path)
    for key, data in files.items():
        assert src.get(key) == data


def test_local_etag_changes_when_the_file_changes(tmp_path: Path) -> None:
    (tmp_path / "x.dcm").write_bytes(b"first")
    src = LocalSource(tmp_path)
    before = {r.key: r.etag for r in src.list()}
    st = (tmp_path / "x.dcm").stat()
    (tmp_path / "x.dcm").write_bytes(b"second!")
    os.utime(tmp_path / "x.dcm", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    after = {r.key: r.etag for r in src.list()}
    assert before["x.dcm"] != after["x.dcm"]
    assert {r.key: r.etag for r in src.list()} == after  # stable while unchanged


def test_local_ranged_read_returns_exactly_n_bytes(tmp_path: Path) -> None:
    data = _payload(3, 5000)
    (tmp_path / "blob").write_bytes(data)
    src = LocalSource(tmp_path)
    assert src.get_range("blob", 1024) == data[:1024]
    assert len(src.get_range("blob", 1)) == 1
    assert src.get_range("blob", 10_000) == data  # longer than the object: the whole object


@pytest.mark.parametrize(
    "key", ["../outside.dcm", "a/../../outside.dcm", "/etc/passwd", "a/../../../etc/passwd"]
)
def test_local_rejects_keys_that_escape_the_root(tmp_path: Path, key: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.dcm").write_bytes(b"secret")
    src = LocalSource(root)
    with pytest.raises(ValueError, match="escapes"):
        src.get(key)
    with pytest.raises(ValueError, match="escapes"):
        src.get_range(key, 10)
    with pytest.raises(ValueError, match="escapes"):
        src.put(key, b"x")
    assert (tmp_path / "outside.dcm").read_bytes() == b"secret"


def test_local_rejects_a_symlink_that_leads_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (root / "innocent.dcm").symlink_to(tmp_path / "secret.txt")
    src = LocalSource(root)
    with pytest.raises(ValueError, match="escapes"):
        src.get("innocent.dcm")


def test_local_put_is_atomic_and_creates_folders(tmp_path: Path) -> None:
    src = LocalSource(tmp_path)
    src.put("out/seg/x.dcm", b"abc")
    assert (tmp_path / "out/seg/x.dcm").read_bytes() == b"abc"
    assert not list(tmp_path.rglob("*.part"))


# ---------------------------------------------------------------------------------------------
# S3Source on SeaweedFS


def test_s3_lists_more_than_one_page(s3_bucket: str) -> None:
    """1,100 objects: more than the 1,000-key page S3 returns, so the paginator must follow."""
    client = s3_client()
    keys = [f"night/{i // 100:02d}/{i:05d}.dcm" for i in range(1100)]

    def put(k: str) -> None:
        client.put_object(Bucket=s3_bucket, Key=k, Body=k.encode())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))
    client.put_object(Bucket=s3_bucket, Key="night-other/not-mine.dcm", Body=b"x")
    client.put_object(Bucket=s3_bucket, Key="elsewhere.dcm", Body=b"x")

    src = S3Source(s3_bucket, "night")
    refs = list(src.list())
    assert sorted(r.key for r in refs) == sorted(k[len("night/"):] for k in keys)
    assert all(r.size == len(f"night/{r.key}") and r.etag for r in refs)
    # A small page size walks the same objects in many requests.
    assert sorted(r.key for r in src.list(page_size=70)) == sorted(r.key for r in refs)
    # A whole-bucket source sees everything, prefix-less keys included.
    assert len(list(S3Source(s3_bucket).list())) == 1102


def test_s3_ranged_get_returns_exactly_n_bytes(s3_bucket: str) -> None:
    data = _payload(5, 40_000)
    src = S3Source(s3_bucket, "p")
    src.put("study/blob.dcm", data)
    assert src.get_range("study/blob.dcm", 16 * 1024) == data[: 16 * 1024]
    assert len(src.get_range("study/blob.dcm", 1)) == 1
    assert src.get_range("study/blob.dcm", 0) == b""
    assert src.get_range("study/blob.dcm", 100_000) == data  # past the end: the whole object
    assert src.get("study/blob.dcm") == data


def test_s3_odd_key_names_round_trip(s3_bucket: str) -> None:
    src = S3Source(s3_bucket, "odd prefix/ü")
    for i, key in enumerate(ODD_KEYS):
        src.put(key, _payload(i))
    refs = {r.key: r for r in src.list()}
    assert sorted(refs) == sorted(ODD_KEYS)
    for i, key in enumerate(ODD_KEYS):
        assert src.get(key) == _payload(i)
        assert src.get_range(key, 10) == _payload(i)[:10]
        assert refs[key].size == len(_payload(i))


def test_s3_skips_folder_markers(s3_bucket: str) -> None:
    client = s3_client()
    client.put_object(Bucket=s3_bucket, Key="pre/folder/", Body=b"")
    client.put_object(Bucket=s3_bucket, Key="pre/folder/file", Body=b"1")
    assert [r.key for r in S3Source(s3_bucket, "pre").list()] == ["folder/file"]


def test_s3_etag_changes_when_the_object_changes(s3_bucket: str) -> None:
    src = S3Source(s3_bucket)
    src.put("a.dcm", b"one")
    first = next(iter(src.list())).etag
    src.put("a.dcm", b"two")
    assert next(iter(src.list())).etag != first


def test_upload_folder_mirrors_a_tree(tmp_path: Path, s3_server) -> None:
    files = _write_tree(tmp_path)
    n = upload_folder(tmp_path, "upload-target", "in/night1")
    assert n == len(files)
    src = open_source("s3://upload-target/in/night1")
    assert {r.key for r in src.list()} == set(files)
    assert all(src.get(k) == v for k, v in files.items())


def test_missing_key_is_an_error_not_empty_bytes(s3_bucket: str, tmp_path: Path) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        S3Source(s3_bucket).get("does/not/exist")
    with pytest.raises(FileNotFoundError):
        LocalSource(tmp_path).get("does/not/exist")


# ---------------------------------------------------------------------------------------------
# open_source


def test_open_source_parses_uris(tmp_path: Path, s3_server) -> None:
    src = open_source("s3://bucket-x/a/b/")
    assert isinstance(src, S3Source)
    assert (src.bucket, src.prefix, src.uri) == ("bucket-x", "a/b", "s3://bucket-x/a/b")
    whole = open_source("s3://bucket-x")
    assert isinstance(whole, S3Source)
    assert (whole.prefix, whole.uri) == ("", "s3://bucket-x")
    local = open_source(tmp_path)
    assert isinstance(local, LocalSource)
    assert local.uri == tmp_path.resolve().as_uri()
    assert isinstance(open_source(str(tmp_path)), LocalSource)


def test_open_source_rejects_bad_uris(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no bucket"):
        open_source("s3://")
    with pytest.raises(ValueError, match="no bucket"):
        open_source("s3:///prefix")
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "missing")
    (tmp_path / "file.dcm").write_bytes(b"x")
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "file.dcm")


# ---------------------------------------------------------------------------------------------
# outage retries (the store going away for good is in test_faults.py)


def _client_error(status: int, code: str):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "s3://b/patient-smith/1.dcm"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def test_outages_are_retried_with_backoff_within_the_budget(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Connection errors, 5xx and SlowDown are retried with exponential backoff and jitter until
    ``BLOODNET_S3_RETRY_SECONDS`` is spent, then the last error is raised unchanged; the log
    names the operation and error class, never the key (messages can carry it)."""
    import logging

    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    from bloodnet_ops import storage

    clock = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        clock[0] += s

    monkeypatch.setattr(storage.time, "monotonic", lambda: clock[0])
    url = "http://127.0.0.1:1/bucket/patient-smith/1.dcm"
    errors = [EndpointConnectionError(endpoint_url=url), ConnectionClosedError(endpoint_url=url),
              _client_error(503, "SlowDown"), _client_error(500, "InternalError")]
    calls = iter(errors)

    def flaky() -> bytes:
        exc = next(calls, None)
        if exc is not None:
            raise exc
        return b"ok"

    caplog.set_level(logging.WARNING, logger="bloodnet_ops.storage")
    assert storage.with_retries("get", flaky, sleep=sleep) == b"ok"
    assert len(waits) == 4
    for i, w in enumerate(waits):  # 0.5 s doubling, times a jitter factor in [0.5, 1]
        assert 0.5 * 0.5 * 2 ** i <= w <= 0.5 * 2 ** i
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4 and all("retry" in m for m in messages)
    assert not any("smith" in m or "1.dcm" in m for m in messages)

    # a store that stays down: no attempt starts after the budget, the error is the original
    monkeypatch.setenv("BLOODNET_S3_RETRY_SECONDS", "20")
    clock[0], waits[:] = 0.0, []

    def down() -> bytes:
        raise EndpointConnectionError(endpoint_url=url)

    with pytest.raises(EndpointConnectionError):
        storage.with_retries("get", down, sleep=sleep)
    assert sum(waits) <= 20 and len(waits) >= 3
    assert max(waits) <= storage.BACKOFF_MAX_S

    # budget 0: no retries at all (the Airflow task retry takes over)
    monkeypatch.setenv("BLOODNET_S3_RETRY_SECONDS", "0")
    waits[:] = []
    with pytest.raises(EndpointConnectionError):
        storage.with_retries("get", down, sleep=sleep)
    assert waits == []


@pytest.mark.parametrize("status,code", [(404, "NoSuchKey"), (403, "AccessDenied"),
                                         (416, "InvalidRange"), (400, "InvalidArgument")])
def test_errors_about_the_object_are_not_retried(status: int, code: str) -> None:
    from botocore.exceptions import ClientError

    from bloodnet_ops import storage

    calls = []

    def bad() -> bytes:
        calls.append(1)
        raise _client_error(status, code)

    with pytest.raises(ClientError):
        storage.with_retries("get", bad, sleep=lambda s: pytest.fail("slept"))
    assert calls == [1]
