"""Object sources: a local folder or an ``s3://bucket/prefix``, behind one small interface.

Keys are always relative to the source root, use ``/`` separators and may have *any* layout:
nothing downstream reads meaning into them (studies are found from DICOM UIDs).

S3 endpoint and credentials come from the standard AWS environment variables plus
``BLOODNET_S3_ENDPOINT``. Retries happen at two levels, so a flapping or restarting object store
slows a night down rather than failing it:

- botocore's ``standard`` mode retries each request (exponential backoff on throttling, 5xx and
  connection errors), but gives up after ~6 s of connection errors (8 attempts, 50 ms x 2^i);
- :func:`with_retries` then retries the whole read, list page or write for up to
  ``BLOODNET_S3_RETRY_SECONDS`` (default 60 s) in all, with exponential backoff and jitter, on
  connection-level errors and on 5xx / SlowDown answers that outlived botocore's attempts. That
  rides out a store restart (5-20 s) without a task retry. Anything else (404, 403, a bad range)
  is raised at once: it is about the object, not the store.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from bloodnet_ops.records import ObjectRef

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Bytes fetched by the first ranged GET. A CT header is typically 1–4 kB; 16 kB covers vendor
#: private blocks too, and costs the same round trip as 1 kB.
HEADER_BYTES = 16 * 1024


class Source(Protocol):
    """What every source offers. ``uri`` identifies it in the manifest and in provenance."""

    uri: str

    def list(self) -> Iterator[ObjectRef]: ...
    def get_range(self, key: str, length: int) -> bytes: ...
    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes, content_type: str = "application/dicom") -> None: ...


@dataclass
class LocalSource:
    """A folder on disk. ETag is a hash of (size, mtime_ns), which changes when a file does."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.uri = self.root.as_uri()

    def list(self) -> Iterator[ObjectRef]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                tag = hashlib.blake2b(f"{st.st_size}:{st.st_mtime_ns}".encode(), digest_size=8)
                yield ObjectRef(path.relative_to(self.root).as_posix(), tag.hexdigest(), st.st_size)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):  # keys are untrusted input
            raise ValueError(f"key escapes the source root: {key!r}")
        return path

    def get_range(self, key: str, length: int) -> bytes:
        with open(self._path(key), "rb") as fh:
            return fh.read(length)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def put(self, key: str, data: bytes, content_type: str = "application/dicom") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)


# --------------------------------------------------------------------------- outage retries
#: Environment variable: seconds an S3 operation keeps retrying connection errors and 5xx
#: answers, counted from its first attempt (0 turns this level of retries off).
RETRY_ENV = "BLOODNET_S3_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 60.0
#: Backoff: the first wait, doubling up to the cap, each scaled by a random factor in [0.5, 1].
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0
#: Error codes of answers that mean "the store is struggling", not "this object is bad".
_STORE_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "RequestTimeout", "InternalError", "ServiceUnavailable", "BadGateway", "GatewayTimeout",
})


def retry_seconds() -> float:
    """The retry budget from ``BLOODNET_S3_RETRY_SECONDS`` (read on every call, so a task or a
    test can change it), else :data:`DEFAULT_RETRY_SECONDS`."""
    from bloodnet_ops.settings import current

    return current().s3_retry_seconds


def outage(exc: BaseException) -> str | None:
    """A short description of ``exc`` when it means the store is unreachable or failing
    (connection refused or closed, timeouts, 5xx, throttling), else ``None``. The description
    names only the error class and code: messages can carry the URL, i.e. the object key."""
    from botocore import exceptions as bce

    if isinstance(exc, bce.SSLError):
        return None  # a certificate problem does not go away by waiting
    if isinstance(exc, (bce.ConnectionError, bce.HTTPClientError, bce.IncompleteReadError)):
        return type(exc).__name__
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {}) or {}
        meta = exc.response.get("ResponseMetadata", {}) or {}
        code = str(err.get("Code") or "")
        status = int(meta.get("HTTPStatusCode") or 0)
        if status >= 500 or status == 429 or code in _STORE_CODES:
            return f"{code or 'ClientError'} (HTTP {status or '?'})"
    return None


def with_retries(op: str, fn: Callable[[], T], *, budget: float | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn()``, retried on :func:`outage` errors with exponential backoff and jitter until
    ``budget`` seconds (default :func:`retry_seconds`) have passed; then the last error is
    raised as it was. ``op`` names the operation in the log (never the key)."""
    budget = retry_seconds() if budget is None else budget
    t0 = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            why = outage(exc)
            if why is None:
                raise
            elapsed = time.monotonic() - t0
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** attempt) * random.uniform(0.5, 1)
            if elapsed + delay > budget:
                if attempt:
                    log.error("S3 %s still failing after %.1f s and %d retries (%s); giving up",
                              op, elapsed, attempt, why)
                raise
            attempt += 1
            log.warning("S3 %s failed (%s); retry %d in %.1f s (%.1f of %.0f s used)",
                        op, why, attempt, delay, elapsed, budget)
            sleep(delay)


@dataclass(frozen=True)
class S3Config:
    """Where the object store is and how to sign in, passed explicitly (an Airflow connection's
    values, say) instead of through ``os.environ``. A field left ``None`` falls back to boto3's
    own chain (the AWS_* variables, a profile) and ``BLOODNET_S3_ENDPOINT``."""

    endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    region: str | None = None


def s3_client(endpoint: str | None = None, *, config: S3Config | None = None,
              max_attempts: int = 8, pool: int = 32):
    """A boto3 S3 client for ``config`` (else ``BLOODNET_S3_ENDPOINT`` or AWS, with boto3's
    credential chain) with standard retries."""
    import boto3
    from botocore.config import Config

    from bloodnet_ops.settings import current

    config = config or S3Config()
    endpoint = endpoint or config.endpoint or current().s3_endpoint or None
    cfg = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=pool,
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=config.region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=config.access_key,
        aws_secret_access_key=config.secret_key,
        config=cfg,
    )


@dataclass
class S3Source:
    """``s3://bucket/prefix``. Listing is paginated; reads use ranged GETs where asked."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    config: S3Config | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.prefix = self.prefix.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self._client = s3_client(self.endpoint, config=self.config)

    def sub(self, prefix: str) -> S3Source:
        """The same store and credentials, under ``prefix`` (relative to this prefix)."""
        return S3Source(self.bucket, f"{self.prefix}/{prefix}".strip("/"), self.endpoint,
                        self.config)

    @property
    def client(self):
        return self._client

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def list(self, page_size: int = 1000) -> Iterator[ObjectRef]:
        """Every object under the prefix, page by page; a failed page is retried on its own
        (:func:`with_retries`), so an outage mid-listing does not restart the listing."""
        cut = len(self.prefix) + 1 if self.prefix else 0
        kwargs = {"Bucket": self.bucket, "Prefix": f"{self.prefix}/" if self.prefix else "",
                  "MaxKeys": page_size}
        while True:
            page = with_retries("list", lambda kw=dict(kwargs): self._client.list_objects_v2(**kw))
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue  # folder markers are not objects
                yield ObjectRef(obj["Key"][cut:], obj["ETag"].strip('"'), int(obj["Size"]))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    def probe(self) -> None:
        """One listing call without retries, so that a command line run learns at once that the
        store is down, the bucket missing or the credentials wrong (the botocore error is raised
        as it is; :mod:`bloodnet_ops.errors` words it)."""
        once = s3_client(self.endpoint, config=self.config, max_attempts=1, pool=1)
        once.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)

    def get_range(self, key: str, length: int) -> bytes:
        if length <= 0:
            return b""
        return with_retries("ranged get", lambda: self._client.get_object(
            Bucket=self.bucket, Key=self._full(key), Range=f"bytes=0-{length - 1}"
        )["Body"].read())

    def get(self, key: str) -> bytes:
        return with_retries("get", lambda: self._client.get_object(
            Bucket=self.bucket, Key=self._full(key))["Body"].read())

    def put(self, key: str, data: bytes, content_type: str = "application/dicom") -> None:
        with_retries("put", lambda: self._client.put_object(
            Bucket=self.bucket, Key=self._full(key), Body=data, ContentType=content_type))


def open_source(uri: str | os.PathLike[str], *, probe: bool = False,
                s3: S3Config | None = None) -> LocalSource | S3Source:
    """``s3://bucket/prefix`` → :class:`S3Source` (signed in with ``s3``); anything else is a
    local folder. With ``probe``, an S3 source is tried once (:meth:`S3Source.probe`) first."""
    text = str(uri)
    if text.startswith("s3://"):
        bucket, _, prefix = text[5:].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {text!r}")
        source = S3Source(bucket, prefix, config=s3)
        if probe:
            source.probe()
        return source
    path = Path(text)
    if not path.is_dir():
        raise FileNotFoundError(f"source folder does not exist: {text}")
    return LocalSource(path)


def upload_folder(folder: Path, bucket: str, prefix: str = "", *, workers: int = 16,
                  config: S3Config | None = None) -> int:
    """Upload every file under ``folder`` to ``s3://bucket/prefix`` (creating the bucket). Returns
    the number of objects. Used by the demo and the tests."""
    from concurrent.futures import ThreadPoolExecutor

    client = s3_client(config=config, pool=workers)
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    except client.exceptions.BucketAlreadyExists:
        pass
    folder = Path(folder)
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]

    def _one(path: Path) -> None:
        key = path.relative_to(folder).as_posix()
        client.upload_file(str(path), bucket, f"{prefix.strip('/')}/{key}" if prefix else key)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(_one, files))
    return len(files)
