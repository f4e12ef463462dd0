"""Step 2: validate the pending objects and record every verdict."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date

from bloodnet_ops.db import manifest, validation
from bloodnet_ops.nightly.common import engine, open_uri
from bloodnet_ops.nightly.records import ValidationSummary
from bloodnet_ops.reasons import Verdict
from bloodnet_ops.records import ObjectRef, StudyResult, ValidationReport
from bloodnet_ops.storage import S3Config

log = logging.getLogger(__name__)


def parse_date(text: str | date | None) -> date | None:
    """``YYYYMMDD`` or ``YYYY-MM-DD`` (or a date, or nothing)."""
    if text is None or text == "":
        return None
    if isinstance(text, date):
        return text
    digits = str(text).replace("-", "")
    return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))


def in_scope(study: StudyResult, site: str | None, date_from: date | None,
             date_to: date | None) -> bool:
    """Whether a study belongs to this run's site and StudyDate range."""
    if site and study.site != site:
        return False
    if date_from or date_to:
        try:
            when = parse_date(study.study_date)
        except ValueError:
            return False
        if when is None or (date_from and when < date_from) or (date_to and when > date_to):
            return False
    return True


def validate_and_record(
    source_uri: str,
    db_url: str,
    run_id: str,
    *,
    prefix: str | None = None,
    site: str | None = None,
    date_from: str | date | None = None,
    date_to: str | date | None = None,
    s3: S3Config | None = None,
) -> ValidationSummary:
    """Validate the pending objects (headers first, then HU of the selected series) and record
    verdicts, expectation outcomes, quarantine, the chosen series' keys and the manifest for
    ``run_id``.

    A pending slice of a study seen before brings the study's other objects along, so a study is
    always validated whole. Studies outside ``site`` / the StudyDate range are not recorded and
    stay pending for a later run.
    """
    from bloodnet_ops import pipeline

    t0 = time.perf_counter()
    source = open_uri(source_uri, s3=s3)
    db = engine(db_url)
    lo, hi = parse_date(date_from), parse_date(date_to)
    total = manifest.count_pending(db, source.uri, prefix)
    n_extra = n_pending = 0

    def more(study_uids: list[str]) -> list[ObjectRef]:
        nonlocal n_extra
        extra = manifest.manifest_keys_for_studies(db, source.uri, study_uids,
                                                   except_pending_under=prefix or "")
        if extra:
            log.info("revalidating %d known objects of studies with new objects", len(extra))
        n_extra = len(extra)
        return extra

    def pending() -> Iterator[ObjectRef]:
        nonlocal n_pending
        for ref in manifest.iter_pending(db, source.uri, prefix):
            n_pending += 1
            yield ref

    n_objects = n_studies = rejected = n_unreadable = deferred = 0
    reasons: Counter[str] = Counter()
    # each part (whole studies, or unreadable objects) is recorded before the next is built,
    # so memory does not grow with the night; a run that dies part-way leaves the rest pending
    for part in pipeline.iter_validation(source, pending(), total=total, more=more):
        kept = [s for s in part.studies if in_scope(s, site, lo, hi)]
        deferred += len(part.studies) - len(kept)
        validation.record_validation(db, ValidationReport(kept, part.unreadable, part.objects),
                                     source_uri=source.uri, run_id=run_id)
        n_objects += len(part.objects)
        n_studies += len(kept)
        rejected += sum(s.verdict == Verdict.REJECT for s in kept)
        n_unreadable += len(part.unreadable)
        reasons.update(r.value for s in kept for r in s.reasons)
        reasons.update(u.reason.value for u in part.unreadable)
    if n_objects != n_pending + n_extra:  # a bug, not bad data
        raise AssertionError(f"accounting broken: {n_objects} objects recorded of "
                             f"{n_pending} pending and {n_extra} known")
    summary = ValidationSummary(
        run_id=run_id, n_objects=n_objects, n_studies=n_studies,
        n_accepted=n_studies - rejected, n_rejected=rejected, n_unreadable=n_unreadable,
        n_deferred=deferred, reasons=dict(sorted(reasons.items())),
        seconds=time.perf_counter() - t0,
    )
    log.info("validated %d studies: %d accepted, %d rejected, %d unreadable objects",
             summary.n_studies, summary.n_accepted, summary.n_rejected, summary.n_unreadable)
    return summary

