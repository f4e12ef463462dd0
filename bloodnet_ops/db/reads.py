"""``radiology_reads``: the imported reads and what they matched."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from bloodnet_ops.db.models import Study
from bloodnet_ops.db.models_audit import RadiologyRead

#: Rows per statement.
BATCH = 1000


def upsert_reads(session: Session, *, rows: list[dict]) -> tuple[int, int]:
    """Upsert reads on ``read_key``; returns (inserted, updated)."""
    inserted = updated = 0
    for start in range(0, len(rows), BATCH):
        stmt = insert(RadiologyRead).values(rows[start : start + BATCH])
        cols = {c: stmt.excluded[c] for c in rows[0] if c != "read_key"}
        stmt = stmt.on_conflict_do_update(
            index_elements=["read_key"], set_={**cols, "updated_at": func.now()}
        )
        # xmax = 0 only on a freshly inserted tuple: tells inserts from updates in one statement.
        flags = session.execute(stmt.returning(literal_column("(xmax = 0)"))).scalars().all()
        inserted += sum(1 for f in flags if f)
        updated += sum(1 for f in flags if not f)
    return inserted, updated


def read_outcomes(session: Session, *, read_keys: Sequence[str]) -> list[Any]:
    """``(row_number, status, unmatched_reason, study_uid)`` of the given reads."""
    out: list[Any] = []
    for start in range(0, len(read_keys), BATCH):
        out.extend(session.execute(
            select(RadiologyRead.row_number, RadiologyRead.status, RadiologyRead.unmatched_reason,
                   RadiologyRead.study_uid)
            .where(RadiologyRead.read_key.in_(list(read_keys[start : start + BATCH])))
        ).all())
    return out


def valid_reads(session: Session) -> list[Any]:
    """Every read that parsed, with its current match."""
    return list(session.execute(
        select(RadiologyRead.id, RadiologyRead.study_uid, RadiologyRead.accession_key,
               RadiologyRead.site, RadiologyRead.status, RadiologyRead.matched_study_uid,
               RadiologyRead.unmatched_reason)
        .where(RadiologyRead.status != "invalid")
    ).all())


def set_match_outcomes(session: Session, *, changed: list[dict[str, Any]]) -> None:
    """Write the reads whose match changed (``id`` plus the new columns)."""
    if changed:
        session.execute(update(RadiologyRead), changed)


def studies_named(
    session: Session, *, uids: set[str], accession_keys: set[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """``study_uid → site`` and ``accession_key → study_uid`` of the screened studies that any of
    ``uids`` or ``accession_keys`` name (queried in chunks)."""
    site_of: dict[str, str] = {}
    uid_of_acc: dict[str, str] = {}
    wanted = [("uid", u) for u in sorted(uids)] + [("acc", a) for a in sorted(accession_keys)]
    for start in range(0, len(wanted), BATCH):
        chunk = wanted[start : start + BATCH]
        by_uid = [v for k, v in chunk if k == "uid"]
        by_acc = [v for k, v in chunk if k == "acc"]
        for uid, acc, site in session.execute(
            select(Study.study_uid, Study.accession_key, Study.site).where(
                Study.study_uid.in_(by_uid) | Study.accession_key.in_(by_acc)
            )
        ):
            site_of[uid] = site
            if acc:
                uid_of_acc[acc] = uid
    return site_of, uid_of_acc
