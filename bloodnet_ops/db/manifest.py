"""The ``objects`` manifest: what discovery saw, what is pending, what each object became."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from bloodnet_ops.db.models import ObjectRecord
from bloodnet_ops.db.session import with_retries
from bloodnet_ops.db.upsert import MANIFEST_CHUNK, chunked, table_of, upsert
from bloodnet_ops.reasons import Verdict
from bloodnet_ops.records import ObjectRef, ValidationReport


def manifest_changes(
    engine: Engine, source_uri: str, objects: Iterable[ObjectRef]
) -> list[ObjectRef]:
    """The objects that are new, changed (another ETag) or still ``pending`` since the last
    completed recording (:func:`manifest_record`) of ``source_uri``.

    New and changed objects are entered as ``pending``, so a run that dies before recording offers
    them again next time; unchanged ones only get ``last_seen`` refreshed. Works in chunks of
    :data:`MANIFEST_CHUNK`, so memory does not grow with the listing.
    """
    out: list[ObjectRef] = []
    for chunk in chunked(objects, MANIFEST_CHUNK):
        by_key = {o.key: o for o in chunk}
        out.extend(with_retries(lambda b=by_key: _manifest_chunk(engine, source_uri, b)))
    return out


def _manifest_chunk(
    engine: Engine, source_uri: str, by_key: dict[str, ObjectRef]
) -> list[ObjectRef]:
    t = table_of(ObjectRecord)
    keys = list(by_key)
    with engine.begin() as conn:
        known = {
            row.key: (row.etag, row.status)
            for row in conn.execute(
                select(t.c.key, t.c.etag, t.c.status).where(
                    t.c.source_uri == source_uri, t.c.key.in_(keys)
                )
            )
        }
        changed = [
            o
            for k, o in by_key.items()
            if k not in known or known[k][0] != o.etag or known[k][1] == "pending"
        ]
        upsert(
            conn,
            ObjectRecord,
            [
                {"source_uri": source_uri, "key": o.key, "etag": o.etag, "size": o.size,
                 "status": "pending"}
                for o in changed
            ],
            ("source_uri", "key"),
            update=("etag", "size", "status"),
            touch={"last_seen": "now()"},
        )
        changed_keys = {o.key for o in changed}
        unchanged = [k for k in keys if k in known and k not in changed_keys]
        if unchanged:
            conn.execute(
                update(t)
                .where(t.c.source_uri == source_uri, t.c.key.in_(unchanged))
                .values(last_seen=func.now())
            )
    return changed


def manifest_record(
    engine: Engine, source_uri: str, report: ValidationReport, run_id: str
) -> int:
    """Mark every object of ``report`` ``ingested`` (its study was accepted, with or without
    warnings), ``rejected`` (its study was rejected; reason codes joined by ``,``) or
    ``unreadable``. Returns the number of objects recorded."""

    def _do() -> int:
        with engine.begin() as conn:
            return manifest_record_conn(conn, source_uri, report, run_id)

    return with_retries(_do)


def manifest_record_conn(
    conn: Connection, source_uri: str, report: ValidationReport, run_id: str
) -> int:
    refs = {o.key: o for o in report.objects}
    rows: list[dict[str, Any]] = []
    for study in report.studies:
        rejected = study.verdict == Verdict.REJECT
        reason = ",".join(r.value for r in study.reasons) or None
        for key in study.keys:
            ref = refs.get(key)
            rows.append({
                "source_uri": source_uri, "key": key,
                "etag": ref.etag if ref else "", "size": ref.size if ref else 0,
                "status": "rejected" if rejected else "ingested",
                "study_uid": study.study_uid, "reason": reason, "run_id": run_id,
            })
    for u in report.unreadable:
        rows.append({
            "source_uri": source_uri, "key": u.key, "etag": u.etag, "size": u.size,
            "status": "unreadable", "study_uid": None, "reason": u.reason.value,
            "run_id": run_id,
        })
    if not rows:
        return 0
    # A key the report lists without its ObjectRef keeps the ETag discovery stored.
    etag = "CASE WHEN EXCLUDED.etag = '' THEN objects.etag ELSE EXCLUDED.etag END"
    size = "CASE WHEN EXCLUDED.etag = '' THEN objects.size ELSE EXCLUDED.size END"
    return upsert(
        conn, ObjectRecord, rows, ("source_uri", "key"),
        update=("status", "study_uid", "reason", "run_id"),
        touch={"etag": etag, "size": size, "recorded_at": "now()", "last_seen": "now()"},
    )


def manifest_keys_for_studies(
    engine: Engine, source_uri: str, study_uids: Iterable[str], *,
    except_pending_under: str | None = None,
) -> list[ObjectRef]:
    """Every recorded object of the given studies, so an incremental run that sees one new slice
    of a known study can re-validate the whole study rather than a fragment of it.

    ``except_pending_under``: leave out the ``pending`` objects under this key prefix (``""``:
    all pending objects), i.e. those the caller is validating anyway."""
    uids = sorted(set(study_uids))
    if not uids:
        return []
    t = table_of(ObjectRecord)
    where = [t.c.source_uri == source_uri]
    if except_pending_under is not None:
        prefix = except_pending_under.strip("/")
        pending = t.c.status == "pending"
        if prefix:
            pending = pending & t.c.key.startswith(prefix + "/", autoescape=True)
        where.append(~pending)
    out: list[ObjectRef] = []
    with engine.connect() as conn:
        for chunk in chunked(uids, MANIFEST_CHUNK):
            rows = conn.execute(
                select(t.c.key, t.c.etag, t.c.size)
                .where(*where, t.c.study_uid.in_(chunk))
                .order_by(t.c.key)
            )
            out.extend(ObjectRef(r.key, r.etag, int(r.size)) for r in rows)
    return sorted(out, key=lambda o: o.key)


def iter_pending(
    engine: Engine, source_uri: str, prefix: str | None = None, *, page: int = MANIFEST_CHUNK
) -> Iterator[ObjectRef]:
    """The manifest's ``pending`` objects of a source (optionally under a key prefix), by key,
    one page at a time (keyset pagination: short queries, no cursor held open while the
    caller works, and the caller may record objects as it goes)."""
    t = table_of(ObjectRecord)
    where = [t.c.source_uri == source_uri, t.c.status == "pending"]
    prefix = (prefix or "").strip("/")
    if prefix:
        where.append(t.c.key.startswith(prefix + "/", autoescape=True))
    last: str | None = None
    while True:
        q = select(t.c.key, t.c.etag, t.c.size).where(*where)
        if last is not None:
            q = q.where(t.c.key > last)
        with engine.connect() as conn:
            rows = conn.execute(q.order_by(t.c.key).limit(page)).all()
        yield from (ObjectRef(r.key, r.etag, int(r.size)) for r in rows)
        if len(rows) < page:
            return
        last = rows[-1].key


def count_pending(engine: Engine, source_uri: str, prefix: str | None = None) -> int:
    """How many ``pending`` objects :func:`iter_pending` will give."""
    t = table_of(ObjectRecord)
    where = [t.c.source_uri == source_uri, t.c.status == "pending"]
    prefix = (prefix or "").strip("/")
    if prefix:
        where.append(t.c.key.startswith(prefix + "/", autoescape=True))
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t).where(*where)).scalar_one())


def reoffer(engine: Engine, *, source_uri: str, keys: Sequence[str], run_id: str,
            rescan: bool = False, prefix: str | None = None) -> int:
    """Set back to ``pending`` the objects among ``keys`` that ``run_id`` recorded before (a
    rerun of the night redoes its work), or with ``rescan`` any recorded object under
    ``prefix`` (a backfill). Returns how many."""
    t = table_of(ObjectRecord)
    where = [t.c.source_uri == source_uri, t.c.status != "pending", t.c.key.in_(list(keys))]
    if not rescan:
        where.append(t.c.run_id == run_id)
    prefix = (prefix or "").strip("/")
    if prefix:
        where.append(t.c.key.startswith(prefix + "/", autoescape=True))

    def _do() -> int:
        with engine.begin() as conn:
            return conn.execute(update(t).where(*where).values(status="pending")).rowcount

    return with_retries(_do)
