"""Import radiology reads (the audit's ground truth) from CSV or JSON lines, on disk or in S3.

Format: a CSV with the header
``study_uid,accession_number,site,read_date,reader,ich,subtypes,report`` or JSON lines with the
same fields. Either ``study_uid`` or ``accession_number`` may be empty (not both); ``ich`` is 0/1;
``subtypes`` is ``;``-separated (EDH, SDH, SAH, IPH, IVH); ``report`` is optional free text;
``read_date`` is ISO (2026-02-01) or DICOM DA (20260201).

Identifiers are pseudonymised before they reach the database (accession number and reader name,
with :func:`bloodnet_ops.pseudonym.pseudonymise`); the free-text report may hold PHI, so it is
stored only when the caller asks. Every row is kept: a malformed row is stored as ``invalid`` with
a reason, and a row whose study was never screened as ``unmatched``; both are reported. Upserts
on ``read_key`` make a re-import idempotent, and :func:`match_reads` re-resolves unmatched reads
after later screening nights.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from bloodnet_ops.db import reads as reads_db
from bloodnet_ops.pseudonym import pseudonymise

log = logging.getLogger(__name__)

FIELDS = (
    "study_uid", "accession_number", "site", "read_date", "reader", "ich", "subtypes", "report",
)
SUBTYPES = ("EDH", "SDH", "SAH", "IPH", "IVH")
_ICH_VALUES = {"1": True, "0": False, "true": True, "false": False}
#: Rows per INSERT statement.
BATCH = 1000


@dataclass(frozen=True, slots=True)
class ReadProblem:
    """A row that is kept but cannot be used as is (no PHI: row number, reason, study UID only)."""

    row_number: int
    reason: str  #: no_identifier, bad_ich, bad_read_date, bad_subtype, unknown_study, ...
    study_uid: str | None = None


@dataclass(slots=True)
class ReadsImport:
    """What one import did. ``problems`` lists every invalid or unmatched row."""

    source: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    duplicates: int = 0  #: rows whose key repeated an earlier row of the same file (last one wins)
    matched: int = 0
    unmatched: int = 0
    invalid: int = 0
    problems: list[ReadProblem] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "inserted": self.inserted,
            "updated": self.updated,
            "duplicates": self.duplicates,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "invalid": self.invalid,
            "problems": dict(Counter(p.reason for p in self.problems)),
        }


def read_bytes(uri: str | Path, *, s3: Any = None) -> bytes:
    """The bytes of a local file or an ``s3://bucket/key`` object (signed in with ``s3``, an
    :class:`~bloodnet_ops.storage.S3Config`)."""
    text = str(uri)
    if text.startswith("s3://"):
        from bloodnet_ops.storage import S3Source

        bucket, _, key = text[5:].partition("/")
        if not bucket or not key:
            raise ValueError(f"expected s3://bucket/key, got {text!r}")
        return S3Source(bucket, config=s3).get(key)
    return Path(text).read_bytes()


def _records(data: bytes, source: str) -> list[dict[str, Any]]:
    """Rows as dicts, from CSV (with header) or JSON lines (sniffed from the first character)."""
    text = data.decode("utf-8-sig")
    if text.lstrip().startswith("{"):
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                rows.append({**obj, "__line__": n})
            else:
                rows.append({"__error__": "bad_json", "__line__": n, "text": line})
        return rows
    reader = csv.DictReader(io.StringIO(text))
    missing = {"study_uid", "accession_number", "ich"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{source}: reads header lacks {sorted(missing)}; expected {list(FIELDS)}")
    return list(reader)


def _text(raw: dict[str, Any], name: str) -> str:
    value = raw.get(name)
    return "" if value is None else str(value).strip()


def _parse_ich(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    return _ICH_VALUES.get(str(value).strip().lower()) if value is not None else None


def _parse_date(value: str) -> date | None:
    for fmt in ("%Y-%m-%d", "%Y%m%d"):  # ISO, and DICOM DA
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(value)


def _subtypes(value: Any) -> list[str]:
    if isinstance(value, list):
        parts = [str(v) for v in value]
    else:
        parts = str(value or "").split(";")
    return [p.strip().upper() for p in parts if p.strip()]


def parse_row(raw: dict[str, Any], *, row_number: int, source: str, keep_report: bool) -> dict:
    """One raw row → the ``radiology_reads`` values (pseudonymised; ``status`` set when invalid)."""
    uid, acc = _text(raw, "study_uid"), _text(raw, "accession_number")
    values: dict[str, Any] = {
        "accession_key": pseudonymise(acc),
        "study_uid": uid or None,
        "site": _text(raw, "site") or None,
        "reader_key": pseudonymise(_text(raw, "reader")),
        "subtypes": [],
        "report": (_text(raw, "report") or None) if keep_report else None,
        "source": source,
        "row_number": row_number,
        "ich": None,
        "read_date": None,
        "status": "unmatched",
        "matched": False,
        "matched_study_uid": None,
        "unmatched_reason": None,
    }
    reason = raw.get("__error__")
    if not reason and not uid and not acc:
        reason = "no_identifier"
    if not reason:
        values["ich"] = _parse_ich(raw.get("ich"))
        if values["ich"] is None:
            reason = "bad_ich"
    if not reason and _text(raw, "read_date"):
        try:
            values["read_date"] = _parse_date(_text(raw, "read_date"))
        except ValueError:
            reason = "bad_read_date"
    if not reason:
        values["subtypes"] = _subtypes(raw.get("subtypes"))
        if any(s not in SUBTYPES for s in values["subtypes"]):
            reason = "bad_subtype"
        elif values["subtypes"] and not values["ich"]:
            reason = "subtypes_without_ich"
    if reason:
        values.update(status="invalid", unmatched_reason=str(reason), ich=None)
        # A stable key for a row that has no usable identifier: same file, same row → same key.
        content = json.dumps(raw, sort_keys=True, default=str)
        values["read_key"] = "row:" + pseudonymise(f"{source}\x00{row_number}\x00{content}")
    elif acc:
        values["read_key"] = "acc:" + values["accession_key"]
    else:
        values["read_key"] = "uid:" + uid
    return values


def import_reads(session: Session, uri: str | Path, *, keep_report: bool = False,
                 s3: Any = None) -> ReadsImport:
    """Import one reads file into ``radiology_reads`` and match it against screened studies.

    Parameters
    ----------
    session
        An open session; the caller commits.
    uri
        A local path or ``s3://bucket/key``; CSV or JSON lines.
    keep_report
        Store the free-text report (it may contain PHI; off by default).
    """
    source = str(uri)
    records = _records(read_bytes(uri, s3=s3), source)
    report = ReadsImport(source=source, rows=len(records))
    by_key: dict[str, dict] = {}
    for n, raw in enumerate(records, start=1):
        values = parse_row(raw, row_number=int(raw.get("__line__", n)), source=source,
                           keep_report=keep_report)
        if values["read_key"] in by_key:
            report.duplicates += 1
        by_key[values["read_key"]] = values  # ON CONFLICT cannot touch one row twice per statement
    rows = list(by_key.values())
    if rows:
        report.inserted, report.updated = reads_db.upsert_reads(session, rows=rows)
    match_reads(session)
    keys = [r["read_key"] for r in rows]
    for row_number, status, reason, uid in reads_db.read_outcomes(session, read_keys=keys):
        setattr(report, status, getattr(report, status) + 1)
        if status != "matched":
            report.problems.append(ReadProblem(row_number, reason or status, uid))
    report.problems.sort(key=lambda p: p.row_number)
    log.info("reads import %s", json.dumps(report.summary()))
    return report


def match_reads(session: Session) -> dict[str, int]:
    """(Re)resolve every valid read to a study in ``studies``: by study UID, else by pseudonymised
    accession number. A read whose UID and accession point to two different studies, or whose
    site differs from the study's, stays unmatched with that reason. Only rows whose outcome
    changed are written. Returns counts by status."""
    reads = reads_db.valid_reads(session)
    site_of, uid_of_acc = reads_db.studies_named(
        session, uids={r.study_uid for r in reads if r.study_uid},
        accession_keys={r.accession_key for r in reads if r.accession_key},
    )
    counts: Counter[str] = Counter()
    changed = []
    for r in reads:
        via_uid = r.study_uid if r.study_uid in site_of else None
        via_acc = uid_of_acc.get(r.accession_key) if r.accession_key else None
        target, reason = via_uid or via_acc, None
        if target is None:
            reason = "unknown_study"
        elif via_uid and via_acc and via_uid != via_acc:
            target, reason = None, "conflicting_ids"
        elif r.site and site_of[target] != r.site:
            target, reason = None, "site_mismatch"
        status = "matched" if target else "unmatched"
        counts[status] += 1
        if (status, target, reason) != (r.status, r.matched_study_uid, r.unmatched_reason):
            changed.append({"id": r.id, "matched_study_uid": target, "matched": target is not None,
                            "status": status, "unmatched_reason": reason})
    reads_db.set_match_outcomes(session, changed=changed)
    return dict(counts)


def import_reads_uri(db_url: str, uri: str | Path, *, keep_report: bool = False,
                     s3: Any = None) -> ReadsImport:
    """:func:`import_reads` in its own transaction (what the audit DAG's import task calls)."""
    from bloodnet_ops.db.session import make_engine, session_scope

    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            return import_reads(session, uri, keep_report=keep_report, s3=s3)
    finally:
        engine.dispose()
