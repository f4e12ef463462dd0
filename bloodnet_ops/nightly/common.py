"""Run ids, the per-process engine cache, and where a night reads and writes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from bloodnet_ops.records import ObjectRef
from bloodnet_ops.storage import LocalSource, S3Config, S3Source, open_source

#: Folder (or key prefix) that holds the derived DICOM objects when no ``output_uri`` is given.
DERIVED_DIR = "bloodnet-derived"
DEFAULT_BATCH = 16


def night_run_id(logical_date: datetime | None, airflow_run_id: str) -> str:
    """The results-DB run id of an Airflow run: its night (logical date), so every run of one
    night, a scheduled one, a cleared and rerun one, or ``dag.test`` for that date, redoes the
    same work under the same id; manual runs without a logical date keep their own run id."""
    if logical_date is None:
        return airflow_run_id
    return f"night__{logical_date.astimezone(UTC):%Y-%m-%dT%H:%M:%S}"


def new_run_id(prefix: str = "screen") -> str:
    """A run id for runs outside Airflow: sortable time plus a random suffix."""
    return f"{prefix}__{datetime.now(UTC):%Y%m%dT%H%M%S}__{uuid.uuid4().hex[:8]}"


_ENGINES: dict[str, Engine] = {}


def engine(db_url: str) -> Engine:
    """One pooled engine per URL and process: the mapped tasks of one worker share it."""
    if db_url not in _ENGINES:
        from bloodnet_ops.db.session import make_engine

        _ENGINES[db_url] = make_engine(db_url)
    return _ENGINES[db_url]


def dispose_engines() -> None:
    """Close every pooled connection (before dropping a database, or at the end of a CLI run)."""
    while _ENGINES:
        _ENGINES.popitem()[1].dispose()


def default_output_uri(source_uri: str) -> str:
    """``<source>/bloodnet-derived``: inside the source, excluded from discovery."""
    return f"{source_uri.rstrip('/')}/{DERIVED_DIR}"


def excluded_prefix(source_uri: str, output_uri: str | None) -> str | None:
    """The key prefix (relative to the source) that holds outputs, when they live inside it."""
    out = (output_uri or default_output_uri(source_uri)).rstrip("/").removeprefix("file://")
    src = source_uri.rstrip("/").removeprefix("file://")
    if not src.startswith("s3://") and not out.startswith("s3://"):
        src, out = str(Path(src).resolve()), str(Path(out).resolve())
    if out.startswith(src + "/"):
        return out[len(src) + 1:] + "/"
    return None


def open_uri(uri: str, *, create: bool = False, s3: S3Config | None = None
             ) -> LocalSource | S3Source:
    """:func:`open_source` that also takes ``file://`` URIs (what :class:`LocalSource` reports as
    its ``uri``) and, with ``create``, makes a missing output folder."""
    if uri.startswith("s3://"):
        return open_source(uri, s3=s3)
    path = Path(uri.removeprefix("file://"))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return open_source(path)


def list_under(source: LocalSource | S3Source, prefix: str | None) -> Iterator[ObjectRef]:
    """Objects under ``prefix`` (relative to the source root), keys still relative to the root,
    so a backfill of a prefix shares manifest rows with the nightly run. On S3 only the prefix
    is listed: a backfill never lists the whole bucket."""
    prefix = (prefix or "").strip("/")
    if not prefix:
        yield from source.list()
        return
    sub = source.sub(prefix) if isinstance(source, S3Source) else (
        LocalSource(source.root / prefix) if (source.root / prefix).is_dir() else None)
    for ref in sub.list() if sub is not None else ():
        yield ObjectRef(f"{prefix}/{ref.key}", ref.etag, ref.size)
