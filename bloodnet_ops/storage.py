"""Object sources: a local folder or an ``s3://bucket/prefix``, behind one small interface.

Keys are always relative to the source root, use ``/`` separators and may have *any* layout:
nothing downstream reads meaning into them (studies are found from DICOM UIDs).

S3 endpoint and credentials come from the standard AWS environment variables plus
``BLOODNET_S3_ENDPOINT``. Retries use botocore's ``standard`` mode (exponential backoff on
throttling and 5xx), so a flapping object store slows a night down rather than failing it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bloodnet_ops.records import ObjectRef

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


def s3_client(endpoint: str | None = None, *, max_attempts: int = 8, pool: int = 32):
    """A boto3 S3 client for ``BLOODNET_S3_ENDPOINT`` (or AWS) with adaptive retries."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint or os.environ.get("BLOODNET_S3_ENDPOINT") or None
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
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=cfg,
    )


@dataclass
class S3Source:
    """``s3://bucket/prefix``. Listing is paginated; reads use ranged GETs where asked."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None

    def __post_init__(self) -> None:
        self.prefix = self.prefix.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self._client = s3_client(self.endpoint)

    @property
    def client(self):
        return self._client

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def list(self, page_size: int = 1000) -> Iterator[ObjectRef]:
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket,
            Prefix=f"{self.prefix}/" if self.prefix else "",
            PaginationConfig={"PageSize": page_size},
        )
        cut = len(self.prefix) + 1 if self.prefix else 0
        for page in pages:
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue  # folder markers are not objects
                yield ObjectRef(obj["Key"][cut:], obj["ETag"].strip('"'), int(obj["Size"]))

    def get_range(self, key: str, length: int) -> bytes:
        if length <= 0:
            return b""
        resp = self._client.get_object(
            Bucket=self.bucket, Key=self._full(key), Range=f"bytes=0-{length - 1}"
        )
        return resp["Body"].read()

    def get(self, key: str) -> bytes:
        return self._client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"].read()

    def put(self, key: str, data: bytes, content_type: str = "application/dicom") -> None:
        self._client.put_object(
            Bucket=self.bucket, Key=self._full(key), Body=data, ContentType=content_type
        )


def open_source(uri: str | os.PathLike[str]) -> LocalSource | S3Source:
    """``s3://bucket/prefix`` → :class:`S3Source`; anything else is a local folder."""
    text = str(uri)
    if text.startswith("s3://"):
        bucket, _, prefix = text[5:].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {text!r}")
        return S3Source(bucket, prefix)
    path = Path(text)
    if not path.is_dir():
        raise FileNotFoundError(f"source folder does not exist: {text}")
    return LocalSource(path)


def upload_folder(folder: Path, bucket: str, prefix: str = "", *, workers: int = 16) -> int:
    """Upload every file under ``folder`` to ``s3://bucket/prefix`` (creating the bucket). Returns
    the number of objects. Used by the demo and the tests."""
    from concurrent.futures import ThreadPoolExecutor

    client = s3_client(pool=workers)
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
