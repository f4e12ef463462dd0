"""Radiology reads import: CSV and JSON lines, disk and S3, pseudonyms, bad rows kept and reported,
idempotent re-import, and re-matching once a study has been screened."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from analytics_helpers import StudySpec, fresh_database, write_studies
from sqlalchemy import func, select, text

from bloodnet_ops.audit.reads import import_reads, import_reads_uri, match_reads
from bloodnet_ops.db.models import Study
from bloodnet_ops.db.models_audit import RadiologyRead
from bloodnet_ops.db.session import make_engine, session_scope
from bloodnet_ops.pseudonym import pseudonymise

DAY = date(2026, 2, 1)
STUDIES = [
    StudySpec("1.2.826.1", "site-a", DAY, probability=0.9, accession="ACC-1"),
    StudySpec("1.2.826.2", "site-a", DAY, probability=0.1, accession="ACC-2"),
    StudySpec("1.2.826.3", "site-b", DAY, probability=0.2, accession="ACC-3"),
]
HEADER = "study_uid,accession_number,site,read_date,reader,ich,subtypes,report\n"
ROWS = [
    '1.2.826.1,,site-a,2026-02-01,Dr Alice Smith,1,SDH;IVH,"acute SDH, Mr John Doe"',  # 1 uid
    ",ACC-2,site-a,2026-02-01,Dr Bob Jones,0,,",  # 2 accession only
    "1.2.826.99,ACC-99,site-a,2026-02-02,Dr Alice Smith,0,,",  # 3 never screened
    ",,site-a,2026-02-02,Dr Alice Smith,1,,",  # 4 no identifier
    "1.2.826.3,,site-b,2026-02-02,Dr Carol White,maybe,,",  # 5 bad ich
    "1.2.826.3,ACC-3,site-b,02/03/2026,Dr Carol White,1,,",  # 6 bad date
    "1.2.826.3,ACC-3,site-b,2026-02-03,Dr Carol White,1,XYZ,",  # 7 bad subtype
    "1.2.826.1,ACC-1X,site-b,2026-02-03,Dr Carol White,1,,",  # 8 wrong site for that study
    "1.2.826.3,ACC-3,site-b,20260203,Dr Carol White,1,sah,",  # 9 both ids, DICOM date
    ",ACC-2,site-a,2026-02-01,Dr Bob Jones,0,,",  # 10 repeats row 2
]
PHI = ("Alice", "Bob", "Carol", "John Doe", "ACC-1", "ACC-2", "ACC-3", "ACC-99")


@pytest.fixture
def reads_db(pg_server_url: str):
    for url in fresh_database(pg_server_url, "bloodnet_reads"):
        write_studies(url, STUDIES)
        yield url


@pytest.fixture
def reads_csv(tmp_path: Path) -> Path:
    path = tmp_path / "reads.csv"
    path.write_text(HEADER + "\n".join(ROWS) + "\n")
    return path


def _all_reads(url: str) -> list[RadiologyRead]:
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            return list(s.execute(select(RadiologyRead).order_by(RadiologyRead.row_number))
                        .scalars())
    finally:
        engine.dispose()


def test_csv_import_keeps_and_reports_every_bad_row(reads_db: str, reads_csv: Path) -> None:
    report = import_reads_uri(reads_db, reads_csv)
    assert (report.rows, report.duplicates) == (10, 1)
    assert (report.matched, report.unmatched, report.invalid) == (3, 2, 4)
    assert [(p.row_number, p.reason) for p in report.problems] == [
        (3, "unknown_study"), (4, "no_identifier"), (5, "bad_ich"), (6, "bad_read_date"),
        (7, "bad_subtype"), (8, "site_mismatch"),
    ]
    assert report.summary()["problems"]["bad_ich"] == 1

    rows = {r.row_number: r for r in _all_reads(reads_db)}
    assert sorted(rows) == [1, 3, 4, 5, 6, 7, 8, 9, 10]  # row 2's key came back in row 10
    assert rows[1].matched_study_uid == "1.2.826.1" and rows[1].ich is True
    assert rows[1].subtypes == ["SDH", "IVH"] and rows[1].read_date == DAY
    assert rows[10].matched_study_uid == "1.2.826.2" and rows[10].ich is False  # by accession
    assert rows[9].matched_study_uid == "1.2.826.3" and rows[9].subtypes == ["SAH"]
    assert rows[9].read_date == date(2026, 2, 3)
    assert rows[3].status == "unmatched" and rows[3].study_uid == "1.2.826.99"
    assert rows[4].status == "invalid" and rows[4].ich is None
    assert rows[8].unmatched_reason == "site_mismatch" and not rows[8].matched

    # pseudonyms, never the raw identifiers; the free-text report is not stored by default
    assert rows[10].accession_key == pseudonymise("ACC-2")
    assert rows[1].reader_key == pseudonymise("Dr Alice Smith") == rows[3].reader_key
    assert all(r.report is None for r in rows.values())
    engine = make_engine(reads_db)
    with engine.connect() as conn:
        dump = " ".join(str(v) for row in conn.execute(text("SELECT * FROM radiology_reads"))
                        for v in row)
        study_key = conn.execute(select(Study.accession_key)
                                 .where(Study.study_uid == "1.2.826.2")).scalar_one()
    engine.dispose()
    assert not [p for p in PHI if p in dump]
    assert study_key == rows[10].accession_key  # the DB layer pseudonymises the same way


def test_reimport_is_idempotent(reads_db: str, reads_csv: Path) -> None:
    first = import_reads_uri(reads_db, reads_csv)
    ids = {r.read_key: r.id for r in _all_reads(reads_db)}
    again = import_reads_uri(reads_db, reads_csv)
    assert (first.inserted, first.updated) == (9, 0)
    assert (again.inserted, again.updated) == (0, 9)
    assert {r.read_key: r.id for r in _all_reads(reads_db)} == ids
    assert again.summary()["problems"] == first.summary()["problems"]


def test_report_text_is_kept_only_when_asked(reads_db: str, reads_csv: Path) -> None:
    engine = make_engine(reads_db)
    try:
        with session_scope(engine) as session:
            import_reads(session, reads_csv, keep_report=True)
    finally:
        engine.dispose()
    rows = {r.row_number: r for r in _all_reads(reads_db)}
    assert rows[1].report == "acute SDH, Mr John Doe"


def test_json_lines_from_s3_and_a_later_screening_night_matches(
    reads_db: str, s3_bucket: str
) -> None:
    from bloodnet_ops.storage import s3_client

    lines = [
        {"study_uid": "1.2.826.3", "accession_number": "", "site": "site-b",
         "read_date": "2026-02-01", "reader": "Dr Carol White", "ich": 1,
         "subtypes": ["IPH"], "report": ""},
        {"study_uid": "1.2.826.7", "accession_number": "ACC-7", "site": "site-b",
         "read_date": "2026-02-01", "reader": "Dr Carol White", "ich": True, "subtypes": "EDH"},
        {"study_uid": "1.2.826.8", "accession_number": "", "site": "site-b", "ich": "2"},
    ]
    body = "\n".join(json.dumps(x) for x in lines) + "\n{not json\n"
    s3_client().put_object(Bucket=s3_bucket, Key="reads/2026-02.jsonl", Body=body.encode())

    report = import_reads_uri(reads_db, f"s3://{s3_bucket}/reads/2026-02.jsonl")
    assert (report.rows, report.matched, report.unmatched, report.invalid) == (4, 1, 1, 2)
    reasons = {p.row_number: p.reason for p in report.problems}
    assert reasons[2] == "unknown_study" and reasons[3] == "bad_ich"
    assert reasons[4] == "bad_json"

    # The study is screened the next night: re-matching picks the kept read up.
    write_studies(reads_db, [StudySpec("1.2.826.7", "site-b", DAY, probability=0.8,
                                       accession="ACC-7")], run_id="run-2")
    engine = make_engine(reads_db)
    try:
        with session_scope(engine) as session:
            assert match_reads(session) == {"matched": 2}
            n_matched = session.execute(
                select(func.count()).select_from(RadiologyRead)
                .where(RadiologyRead.matched.is_(True))).scalar_one()
    finally:
        engine.dispose()
    assert n_matched == 2


def test_a_file_without_the_reads_header_is_refused(reads_db: str, tmp_path: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("study_uid,site,ich_label\n1.2.826.1,site-a,1\n")
    with pytest.raises(ValueError, match="accession_number"):
        import_reads_uri(reads_db, bad)
