"""The nightly screening as plain functions: discover → validate → plan → infer → summarise.

Each function is the body of one Airflow task (``dags/nightly_screening.py``); :func:`screen`
runs them all in-process (``bloodnet screen``). They share no memory: state lives in the results
database (manifest, verdicts, findings) and the object store, and only run ids, study UIDs and
small count dicts pass between them. So any step can run on another machine, and be rerun.

Idempotency:

- the run id of an Airflow run is its night (:func:`night_run_id`); rerunning that night offers
  again the objects it recorded, revalidates them and upserts the same rows;
- findings are upserted on (series_uid, model_version, preprocessing_version); DICOM SEG/SR keys
  are derived from (model version, study UID) and overwritten;
- a study that fails while loading or scoring is quarantined (``pixel_decode_failed``, or
  ``unreadable`` when an object vanished) and the others carry on: one bad study never fails the
  night. An outage of the store (connection errors, 5xx) is not bad data: it raises, and Airflow
  retries the task with exponential backoff.

Outputs (SEG/SR) go under ``output_uri`` (default: ``<source>/bloodnet-derived``). Discovery never
offers keys under it, so a night does not rescan its own outputs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, and_, func, select, update

from bloodnet_ops import PREPROCESSING_VERSION
from bloodnet_ops.reasons import Reason, Verdict
from bloodnet_ops.records import ObjectRef, StudyResult, ValidationReport
from bloodnet_ops.storage import LocalSource, S3Config, S3Source, open_source

log = logging.getLogger(__name__)

#: Folder (or key prefix) that holds the derived DICOM objects when no ``output_uri`` is given.
DERIVED_DIR = "bloodnet-derived"
DEFAULT_BATCH = 16


# ---------------------------------------------------------------------------------------------
# results passed between steps (all JSON-able through ``to_xcom``)


@dataclass(slots=True)
class DiscoveryResult:
    run_id: str
    source_uri: str
    n_listed: int  #: objects under the source (and prefix), outputs excluded
    n_new: int  #: new, changed, still pending, or offered again by a rerun of ``run_id``
    seconds: float = 0.0

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ValidationSummary:
    run_id: str
    n_objects: int
    n_studies: int
    n_accepted: int  #: accept + accept_with_warning
    n_rejected: int
    n_unreadable: int
    n_deferred: int = 0  #: studies outside the site / date filter, left pending
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class RunSummary:
    run_id: str
    source_uri: str
    model_version: str | None
    n_studies: int  #: studies validated in this run
    n_scored: int  #: findings written by this run
    n_positive: int
    n_rejected: int  #: studies rejected (validation or load failure)
    n_unreadable: int  #: objects that are not readable DICOM
    n_failed: int  #: studies that failed while loading or scoring
    reasons: dict[str, int]  #: quarantine rows by reason code
    per_site: dict[str, dict[str, int]]  #: site -> {"studies", "scored", "positive", "rejected"}
    timings: dict[str, float]  #: seconds: load, infer, write, batches_wall, run_wall

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# helpers


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


def _engine(db_url: str) -> Engine:
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


def _excluded_prefix(source_uri: str, output_uri: str | None) -> str | None:
    """The key prefix (relative to the source) that holds outputs, when they live inside it."""
    out = (output_uri or default_output_uri(source_uri)).rstrip("/")
    src = source_uri.rstrip("/")
    src = src.removeprefix("file://")
    out = out.removeprefix("file://")
    if not src.startswith("s3://") and not out.startswith("s3://"):
        from pathlib import Path

        src, out = str(Path(src).resolve()), str(Path(out).resolve())
    if out.startswith(src + "/"):
        return out[len(src) + 1:] + "/"
    return None


def open_uri(uri: str, *, create: bool = False, s3: S3Config | None = None
             ) -> LocalSource | S3Source:
    """:func:`open_source` that also takes ``file://`` URIs (what :class:`LocalSource` reports as
    its ``uri``) and, with ``create``, makes a missing output folder."""
    from pathlib import Path

    if uri.startswith("s3://"):
        return open_source(uri, s3=s3)
    path = Path(uri.removeprefix("file://"))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return open_source(path)


def _list(source: LocalSource | S3Source, prefix: str | None) -> Iterator[ObjectRef]:
    """Objects under ``prefix`` (relative to the source root), keys still relative to the root,
    so a backfill of a prefix shares manifest rows with the nightly run."""
    prefix = (prefix or "").strip("/")
    if not prefix:
        yield from source.list()
        return
    if isinstance(source, S3Source):
        for ref in source.sub(prefix).list():  # listing only the prefix: a backfill never lists the whole bucket
            yield ObjectRef(f"{prefix}/{ref.key}", ref.etag, ref.size)
        return
    folder = source.root / prefix
    if folder.is_dir():
        for ref in LocalSource(folder).list():
            yield ObjectRef(f"{prefix}/{ref.key}", ref.etag, ref.size)


def _objects_table():
    from bloodnet_ops.db.models import ObjectRecord

    return ObjectRecord.__table__


def _under(column, prefix: str | None):
    prefix = (prefix or "").strip("/")
    return column.startswith(prefix + "/", autoescape=True) if prefix else None


def _parse_date(text: str | date | None) -> date | None:
    if text is None or text == "":
        return None
    if isinstance(text, date):
        return text
    digits = str(text).replace("-", "")
    return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))


def _in_scope(study: StudyResult, site: str | None, date_from: date | None,
              date_to: date | None) -> bool:
    if site and study.site != site:
        return False
    if date_from or date_to:
        try:
            when = _parse_date(study.study_date)
        except ValueError:
            return False
        if when is None:
            return False
        if (date_from and when < date_from) or (date_to and when > date_to):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# 1. discover


def discover(
    source_uri: str,
    db_url: str,
    *,
    prefix: str | None = None,
    run_id: str | None = None,
    rescan: bool = False,
    output_uri: str | None = None,
    dag_run_id: str | None = None,
    s3: S3Config | None = None,
) -> DiscoveryResult:
    """List the source and enter new or changed objects in the manifest as ``pending``.

    Also offered again: objects still ``pending`` from a run that died, objects this same
    ``run_id`` recorded before (a rerun of the night redoes its work), and with ``rescan`` every
    object under ``prefix`` (a backfill, e.g. with a new model). Opens the ``inference_runs`` row
    (``dag_run_id``: the Airflow run, when there is one).
    """
    from bloodnet_ops.db import repo
    from bloodnet_ops.db.session import with_retries

    t0 = time.perf_counter()
    run_id = run_id or new_run_id()
    source = open_uri(source_uri, s3=s3)
    engine = _engine(db_url)
    skip = _excluded_prefix(source.uri, output_uri)
    t = _objects_table()
    where = [t.c.source_uri == source.uri, t.c.status != "pending"]
    if not rescan:
        where.append(t.c.run_id == run_id)
    if (scope := _under(t.c.key, prefix)) is not None:
        where.append(scope)
    listing = (o for o in _list(source, prefix) if not (skip and o.key.startswith(skip)))
    n_listed = n_new = 0
    # chunk by chunk, so memory does not grow with the listing
    for chunk in repo.chunked(listing, repo.MANIFEST_CHUNK):
        n_listed += len(chunk)
        n_new += len(repo.manifest_changes(engine, source.uri, chunk))
        keys = [o.key for o in chunk]

        def reoffer(keys: list[str] = keys) -> int:
            with engine.begin() as conn:
                return conn.execute(update(t).where(*where, t.c.key.in_(keys))
                                    .values(status="pending")).rowcount

        n_new += with_retries(reoffer)
    repo.start_inference_run(engine, run_id=run_id, source_uri=source.uri, dag_run_id=dag_run_id)
    result = DiscoveryResult(run_id, source.uri, n_listed, n_new, time.perf_counter() - t0)
    log.info("discovered %d new of %d objects (run %s)", result.n_new, result.n_listed, run_id)
    return result


# ---------------------------------------------------------------------------------------------
# 2. validate


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
    verdicts, expectation outcomes, quarantine and the manifest for ``run_id``.

    A pending slice of a study seen before brings the study's other objects along, so a study is
    always validated whole. Studies outside ``site`` / the StudyDate range are not recorded and
    stay pending for a later run.
    """
    from bloodnet_ops import pipeline
    from bloodnet_ops.db import repo

    t0 = time.perf_counter()
    source = open_uri(source_uri, s3=s3)
    engine = _engine(db_url)
    lo, hi = _parse_date(date_from), _parse_date(date_to)
    total = repo.count_pending(engine, source.uri, prefix)
    n_extra = 0

    def more(study_uids: list[str]) -> list[ObjectRef]:
        nonlocal n_extra
        extra = repo.manifest_keys_for_studies(engine, source.uri, study_uids,
                                               except_pending_under=prefix or "")
        if extra:
            log.info("revalidating %d known objects of studies with new objects", len(extra))
        n_extra = len(extra)
        return extra

    n_pending = 0

    def pending() -> Iterator[ObjectRef]:
        nonlocal n_pending
        for ref in repo.iter_pending(engine, source.uri, prefix):
            n_pending += 1
            yield ref

    n_objects = n_studies = rejected = n_unreadable = deferred = 0
    reasons: Counter[str] = Counter()
    # each part (whole studies, or unreadable objects) is recorded before the next is built,
    # so memory does not grow with the night; a run that dies part-way leaves the rest pending
    parts = pipeline.iter_validation(source, pending(), total=total, more=more)
    for part in parts:
        kept = [s for s in part.studies if _in_scope(s, site, lo, hi)]
        deferred += len(part.studies) - len(kept)
        repo.record_validation(engine, ValidationReport(kept, part.unreadable, part.objects),
                               source_uri=source.uri, run_id=run_id)
        n_objects += len(part.objects)
        n_studies += len(kept)
        rejected += sum(s.verdict == Verdict.REJECT for s in kept)
        n_unreadable += len(part.unreadable)
        reasons.update(r.value for s in kept for r in s.reasons)
        reasons.update(u.reason.value for u in part.unreadable)
    summary = ValidationSummary(
        run_id=run_id,
        n_objects=n_objects,
        n_studies=n_studies,
        n_accepted=n_studies - rejected,
        n_rejected=rejected,
        n_unreadable=n_unreadable,
        n_deferred=deferred,
        reasons=dict(sorted(reasons.items())),
        seconds=time.perf_counter() - t0,
    )
    if n_objects != n_pending + n_extra:  # a bug, not bad data
        raise AssertionError(f"accounting broken: {n_objects} objects recorded of "
                             f"{n_pending} pending and {n_extra} known")
    log.info("validated %d studies: %d accepted, %d rejected, %d unreadable objects",
             summary.n_studies, summary.n_accepted, summary.n_rejected, summary.n_unreadable)
    return summary


# ---------------------------------------------------------------------------------------------
# 3. plan


def plan_batches(
    db_url: str, run_id: str, batch_size: int = DEFAULT_BATCH, *, backlog: bool = True
) -> list[list[str]]:
    """Study UIDs to score, in chunks of ``batch_size``: the studies this run accepted, plus
    (``backlog``) accepted studies of the same source that still have no finding at all (a night
    whose inference died after validation)."""
    from bloodnet_ops.db.models import Finding, InferenceRun, ValidationResult

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    vr, fi, runs = ValidationResult.__table__, Finding.__table__, InferenceRun.__table__
    accepted = vr.c.verdict.in_([Verdict.ACCEPT.value, Verdict.ACCEPT_WITH_WARNING.value])
    with _engine(db_url).connect() as conn:
        uids = set(conn.execute(select(vr.c.study_uid).where(vr.c.run_id == run_id, accepted))
                   .scalars())
        if backlog:
            source = select(runs.c.source_uri).where(runs.c.run_id == run_id).scalar_subquery()
            latest = (
                select(vr.c.study_uid, func.max(vr.c.validated_at).label("at"))
                .where(vr.c.source_uri == source).group_by(vr.c.study_uid).subquery()
            )
            unscored = conn.execute(
                select(vr.c.study_uid)
                .join(latest, and_(vr.c.study_uid == latest.c.study_uid,
                                   vr.c.validated_at == latest.c.at))
                .where(accepted, ~select(fi.c.id).where(fi.c.series_uid == vr.c.series_uid)
                       .exists())
            ).scalars()
            uids.update(unscored)
    ordered = sorted(uids)
    return [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]


# ---------------------------------------------------------------------------------------------
# 4. infer


@lru_cache(maxsize=2)
def _predictor(model_path: str | None):
    """One model per process and weights file: mapped tasks in one worker reuse it."""
    from bloodnet_ops.model.predictor import Predictor

    return Predictor(model_path)


def _studies_for(source, db_url: str, study_uids: Sequence[str]) -> tuple[
        list[StudyResult], dict[str, ObjectRef]]:
    """The studies of ``study_uids`` as validation left them: the selected series (from the
    latest verdict) with its keys, found again by a header pass over the study's objects in the
    manifest. No expectation suites run here; the verdict is already in the database. Returns
    the studies and every object by key (for the input ETags)."""
    from bloodnet_ops.db import repo
    from bloodnet_ops.db.models import Study, ValidationResult
    from bloodnet_ops.headers import read_headers
    from bloodnet_ops.records import SliceHeader
    from bloodnet_ops.series import find_duplicates, sort_slices

    engine = _engine(db_url)
    vr, st = ValidationResult.__table__, Study.__table__
    latest = (select(vr.c.study_uid, func.max(vr.c.validated_at).label("at"))
              .where(vr.c.study_uid.in_(list(study_uids))).group_by(vr.c.study_uid).subquery())
    with engine.connect() as conn:
        rows = conn.execute(
            select(vr.c.study_uid, vr.c.series_uid, vr.c.verdict, vr.c.reasons, st.c.site)
            .join(latest, and_(vr.c.study_uid == latest.c.study_uid,
                               vr.c.validated_at == latest.c.at))
            .join(st, st.c.study_uid == vr.c.study_uid)
        ).all()
    refs = repo.manifest_keys_for_studies(engine, source.uri, study_uids)
    headers = [h for h in read_headers(source, refs) if isinstance(h, SliceHeader)]
    by_study: dict[str, list[SliceHeader]] = {}
    for h in headers:
        by_study.setdefault(h.study_uid, []).append(h)
    studies = []
    for row in sorted(rows, key=lambda r: r.study_uid):
        mine = by_study.get(row.study_uid, [])
        series = sort_slices(find_duplicates(
            [h for h in mine if h.series_uid == row.series_uid]).unique)
        if not series:
            continue  # gone from the store since validation
        first = series[0]
        studies.append(StudyResult(
            study_uid=row.study_uid, series_uid=row.series_uid, site=row.site,
            verdict=Verdict(row.verdict), reasons=[Reason(r) for r in row.reasons],
            keys=sorted(h.key for h in mine), series_keys=[h.key for h in series],
            patient_id=first.patient_id, accession_number=first.accession_number,
            study_date=first.study_date, manufacturer=first.manufacturer,
            manufacturer_model=first.manufacturer_model, kernel=first.kernel, kvp=first.kvp,
            slice_thickness=first.slice_thickness,
            pixel_spacing=first.pixel_spacing[0] if first.pixel_spacing else None,
            n_slices=len(series),
        ))
    return studies, {o.key: o for o in refs}


def load_volume(source, study: StudyResult, *, workers: int = 16):
    """Full GETs of the selected series: the HU volume and the header datasets (for the SEG/SR,
    so the objects are not fetched twice)."""
    from concurrent.futures import ThreadPoolExecutor
    from io import BytesIO

    import pydicom

    from bloodnet_ops.hu import load_series

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="get") as pool:
        blobs = list(pool.map(source.get, study.series_keys))
    datasets = [pydicom.dcmread(BytesIO(b), stop_before_pixels=True) for b in blobs]
    return load_series(blobs), datasets


def _failure_reason(exc: Exception) -> Reason:
    """Why a study that passed validation could not be loaded. An outage (connection errors,
    5xx) re-raises: the task then retries with backoff instead of quarantining good data."""
    from bloodnet_ops.headers import fetch_error

    if fetch_error(exc):
        return Reason.UNREADABLE  # deleted or forbidden since validation
    if isinstance(exc, ConnectionError | TimeoutError) or type(exc).__module__.split(".")[0] in {
            "botocore", "boto3", "urllib3"}:
        raise exc
    return Reason.PIXEL_DECODE_FAILED


@dataclass(slots=True)
class _Scored:
    study: StudyResult
    volume: Any  #: HUVolume
    datasets: list[Any]  #: header datasets of the series (pydicom)
    finding: Any  #: StudyFinding
    blood: Any  #: (z, y, x) float32 or None
    load_s: float


def _failure_detail(exc: BaseException) -> str:
    """The quarantine detail of a study that failed at load or inference (no message text:
    it can carry keys)."""
    if isinstance(exc, MemoryError):
        from bloodnet_ops.pipeline import max_series_voxels, too_large_detail

        return too_large_detail(None, max_series_voxels(), oom=True)
    return f"failed after validation: {type(exc).__name__}"


Failure = tuple[StudyResult, Reason, str]  #: a study that failed after validation, why, detail


def _score_studies(predictor, source, studies: Sequence[StudyResult], *, keep_masks: bool,
                   failed: list[Failure]) -> Iterator[_Scored]:
    """Load and score ``studies``. The Predictor's loading thread pulls the volumes (S3 GETs and
    decoding) while the previous slices compute. A study that cannot be loaded or scored is
    appended to ``failed`` with a reason and a detail, and the others go on."""
    loaded: dict[str, tuple[StudyResult, Any, list[Any], float]] = {}
    done: set[str] = set()

    def load(study: StudyResult) -> bool:
        t0 = time.perf_counter()
        try:
            volume, datasets = load_volume(source, study)
        except Exception as exc:  # noqa: BLE001 - bad data is recorded; an outage re-raises
            reason = _failure_reason(exc)
            log.warning("study failed to load (%s): %s: %s", reason.value, type(exc).__name__,
                        str(exc)[:200])
            failed.append((study, reason, _failure_detail(exc)))
            return False
        loaded[study.study_uid] = (study, volume, datasets, time.perf_counter() - t0)
        return True

    def items() -> Iterator[tuple[str, str, Any]]:
        for study in studies:
            if load(study):
                yield study.study_uid, study.series_uid, loaded[study.study_uid][1]

    def scored(finding, blood) -> _Scored:
        study, volume, datasets, load_s = loaded.pop(finding.study_uid)
        done.add(study.study_uid)
        return _Scored(study, volume, datasets, finding, blood, load_s)

    try:
        for finding, blood in predictor.predict_iter(items(), keep_masks=keep_masks):
            yield scored(finding, blood)
        return
    except (ConnectionError, TimeoutError):
        raise
    except Exception as exc:  # find the study that broke the stream
        if type(exc).__module__.split(".")[0] in {"botocore", "boto3", "urllib3"}:
            raise
        log.warning("batch inference failed (%s); scoring the rest one by one",
                    type(exc).__name__)
    gone = done | {s.study_uid for s, _, _ in failed}
    for study in studies:
        if study.study_uid in gone or not (study.study_uid in loaded or load(study)):
            continue
        item = (study.study_uid, study.series_uid, loaded[study.study_uid][1])
        try:
            ((finding, blood),) = list(predictor.predict_iter([item], keep_masks=keep_masks))
        except Exception as exc:  # noqa: BLE001 - the model cannot score this study
            log.warning("study failed while scoring: %s: %s", type(exc).__name__,
                        str(exc)[:200])
            loaded.pop(study.study_uid)
            failed.append((study, Reason.PIXEL_DECODE_FAILED, _failure_detail(exc)))
            continue
        yield scored(finding, blood)


def infer_batch(
    source_uri: str,
    db_url: str,
    study_uids: Sequence[str],
    run_id: str,
    model_path: str | None = None,
    *,
    output_uri: str | None = None,
    write_dicom: bool = True,
    s3: S3Config | None = None,
) -> dict[str, Any]:
    """Score one batch of studies and upsert their findings with provenance.

    Per study: full GETs of the selected series, the HU volume, BloodNet, a DICOM SEG + SR under
    ``output_uri``, and one ``findings`` row (study/series UIDs, site, patient pseudonym,
    probability, decision, volume, subtypes, model version + weights hash, preprocessing
    version, input ETags, run id, seconds). A study that fails to load or score is quarantined
    (``pixel_decode_failed``) and counted, never raised. Returns counts and seconds.
    """
    from bloodnet_ops.db import repo

    t0 = time.perf_counter()
    source = open_uri(source_uri, s3=s3)
    engine = _engine(db_url)
    studies, refs = _studies_for(source, db_url, study_uids)
    missing = set(study_uids) - {s.study_uid for s in studies}
    rejected = [s for s in studies if s.verdict == Verdict.REJECT or not s.series_uid]
    studies = [s for s in studies if s.verdict != Verdict.REJECT and s.series_uid]
    predictor = _predictor(model_path)
    repo.register_model_version(
        engine, model_version=predictor.model_version, weights_sha256=predictor.weights_sha256,
        threshold=float(predictor.threshold), variant=predictor.variant,
    )
    sink = None
    if write_dicom:
        sink = open_uri(output_uri or default_output_uri(source.uri), create=True, s3=s3)
    rows: list[repo.FindingRow] = []
    failed: list[Failure] = []
    load_s = infer_s = write_s = 0.0
    for item in _score_studies(predictor, source, studies, keep_masks=sink is not None,
                               failed=failed):
        study = item.study
        # the Predictor's own preparation counts as inference; loading is GETs and decoding
        finding = replace(item.finding, load_seconds=round(item.load_s, 4),
                          infer_seconds=round(item.finding.infer_seconds
                                              + item.finding.load_seconds, 4))
        seg_key = sr_key = None
        if sink is not None and item.blood is not None:
            t1 = time.perf_counter()
            try:
                seg_key, sr_key = _write_dicom(sink, study, item, finding,
                                               predictor.model_version)
            except Exception as exc:  # noqa: BLE001 - the finding stands without its DICOM
                log.warning("DICOM SEG/SR not written: %s: %s", type(exc).__name__,
                            str(exc)[:200])
            write_s += time.perf_counter() - t1
        load_s += finding.load_seconds
        infer_s += finding.infer_seconds
        rows.append(repo.FindingRow.from_finding(
            finding, study, model_version=predictor.model_version,
            weights_sha256=predictor.weights_sha256, run_id=run_id,
            input_etags={k: refs[k].etag for k in study.series_keys if k in refs},
            preprocessing_version=PREPROCESSING_VERSION, seg_key=seg_key, sr_key=sr_key,
        ))
    repo.upsert_findings(engine, rows)
    if failed:
        _quarantine_failed(engine, source.uri, run_id, failed, refs)
    counts = {
        "n_studies": len(study_uids),
        "n_scored": len(rows),
        "n_positive": sum(r.positive for r in rows),
        "n_failed": len(failed),
        "n_skipped": len(missing) + len(rejected),  # gone from the store, or rejected by now
        "model_version": predictor.model_version,
        "load_s": round(load_s, 3),
        "infer_s": round(infer_s, 3),
        "write_s": round(write_s, 3),
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    log.info("batch scored %d of %d studies (%d failed) in %.1fs", counts["n_scored"],
             counts["n_studies"], counts["n_failed"], counts["wall_s"])
    return counts


def _write_dicom(sink, study: StudyResult, item: _Scored, finding, model_version: str
                 ) -> tuple[str | None, str]:
    """SEG + SR under ``<output>/<model_version>/<study_uid>/``; returns their full URIs (no SEG
    when the mask is empty)."""
    from bloodnet_ops import dicom_out

    seg_key, sr_key = dicom_out.write_outputs(
        sink, study, item.volume, finding, item.blood, model_version=model_version,
        out_prefix=model_version, source_datasets=item.datasets,
    )
    return (f"{sink.uri}/{seg_key}" if seg_key else None), f"{sink.uri}/{sr_key}"


def _quarantine_failed(engine: Engine, source_uri: str, run_id: str,
                       failed: Iterable[Failure], refs: dict[str, ObjectRef]) -> None:
    """Record studies that failed at load or inference as rejected, with their reason."""
    from bloodnet_ops.db import repo

    studies = [replace(s, verdict=Verdict.REJECT, reasons=list(dict.fromkeys([*s.reasons, why])),
                       detail=detail)
               for s, why, detail in failed]
    objects = [refs[k] for s in studies for k in s.keys if k in refs]
    repo.record_validation(engine, ValidationReport(studies, [], objects), source_uri=source_uri,
                           run_id=run_id)


# ---------------------------------------------------------------------------------------------
# 5. summarise


def summarise_run(db_url: str, run_id: str, counts: Sequence[dict[str, Any]] | None = None,
                  *, status: str = "success", error: str | None = None) -> RunSummary:
    """Close the run in ``inference_runs`` and return its summary, read back from the database
    (so it is the same whichever workers did the batches). ``error`` (a failed run: the
    exception's class name) is stored with the counts."""
    from bloodnet_ops.db import repo
    from bloodnet_ops.db.models import Finding, InferenceRun, Quarantine, Study, ValidationResult

    engine = _engine(db_url)
    counts = [c for c in (counts or []) if c]
    vr, fi, qu, runs, st = (ValidationResult.__table__, Finding.__table__, Quarantine.__table__,
                            InferenceRun.__table__, Study.__table__)
    with engine.connect() as conn:
        run = conn.execute(select(runs).where(runs.c.run_id == run_id)).one()
        verdicts = conn.execute(
            select(st.c.site, vr.c.verdict, func.count())
            .join(st, st.c.study_uid == vr.c.study_uid)
            .where(vr.c.run_id == run_id).group_by(st.c.site, vr.c.verdict)
        ).all()
        scored = conn.execute(
            select(fi.c.site, func.count(), func.count().filter(fi.c.positive))
            .where(fi.c.run_id == run_id).group_by(fi.c.site)
        ).all()
        reasons = dict(conn.execute(
            select(qu.c.reason, func.count()).where(qu.c.run_id == run_id).group_by(qu.c.reason)
        ).all())
        unreadable = conn.execute(
            select(func.count()).where(qu.c.run_id == run_id, qu.c.kind == "object")
        ).scalar_one()
    per_site: dict[str, dict[str, int]] = {}
    for site, verdict, n in verdicts:
        row = per_site.setdefault(site, {"studies": 0, "scored": 0, "positive": 0, "rejected": 0})
        row["studies"] += n
        if verdict == Verdict.REJECT.value:
            row["rejected"] += n
    for site, n, pos in scored:
        row = per_site.setdefault(site, {"studies": 0, "scored": 0, "positive": 0, "rejected": 0})
        row["scored"], row["positive"] = n, pos
    started = run.started_at
    wall = (datetime.now(started.tzinfo) - started).total_seconds() if started else 0.0
    timings = {
        "load_s": round(sum(c.get("load_s", 0.0) for c in counts), 3),
        "infer_s": round(sum(c.get("infer_s", 0.0) for c in counts), 3),
        "write_s": round(sum(c.get("write_s", 0.0) for c in counts), 3),
        "batches_wall_s": round(sum(c.get("wall_s", 0.0) for c in counts), 3),
        "run_wall_s": round(wall, 3),
    }
    versions = {c["model_version"] for c in counts if c.get("model_version")}
    model_version = min(versions) if versions else run.model_version
    summary = RunSummary(
        run_id=run_id,
        source_uri=run.source_uri,
        model_version=model_version,
        n_studies=sum(v["studies"] for v in per_site.values()),
        n_scored=sum(v["scored"] for v in per_site.values()),
        n_positive=sum(v["positive"] for v in per_site.values()),
        n_rejected=sum(v["rejected"] for v in per_site.values()),
        n_unreadable=int(unreadable),
        n_failed=sum(c.get("n_failed", 0) for c in counts),
        reasons=dict(sorted(reasons.items())),
        per_site=dict(sorted(per_site.items())),
        timings=timings,
    )
    if model_version and model_version != run.model_version:
        with engine.begin() as conn:  # the version is known only once a batch has loaded it
            conn.execute(update(runs).where(runs.c.run_id == run_id)
                         .values(model_version=model_version))
    stored = {k: v for k, v in asdict(summary).items() if k.startswith("n_") or k == "reasons"}
    if error:
        stored["error"] = error
    repo.finish_inference_run(engine, run_id=run_id, status=status, counts=stored,
                              timings=timings)
    return summary


def fail_run(db_url: str, run_id: str, error: BaseException | str | None = None) -> bool:
    """Close ``run_id`` as ``failed`` (with its finish time) if it is still ``running``: a step
    failed for good (an Airflow task out of retries, an exception in :func:`screen`), so the
    row must not claim the run is still going. Counts are what the database holds so far;
    ``error`` is kept as a class name only (messages can carry keys). A run that already
    finished is left as it is. Never raises (it runs on failure paths); returns whether the row
    was closed."""
    from bloodnet_ops.db.models import InferenceRun

    name = error if isinstance(error, str) or error is None else type(error).__name__
    runs = InferenceRun.__table__
    try:
        with _engine(db_url).connect() as conn:
            status = conn.execute(select(runs.c.status).where(runs.c.run_id == run_id)
                                  ).scalar_one_or_none()
        if status != "running":
            return False
        summarise_run(db_url, run_id, status="failed", error=name or "unknown")
    except Exception as exc:  # noqa: BLE001 - the original failure is what must surface
        log.error("could not mark run %s failed: %s", run_id, type(exc).__name__)
        return False
    log.warning("run %s marked failed (%s)", run_id, name or "unknown")
    return True


# ---------------------------------------------------------------------------------------------
# all of it, in-process


def screen(
    source_uri: str,
    db_url: str,
    model_path: str | None = None,
    *,
    batch_size: int = DEFAULT_BATCH,
    output_uri: str | None = None,
    prefix: str | None = None,
    site: str | None = None,
    rescan: bool = False,
    run_id: str | None = None,
    write_dicom: bool = True,
    progress: bool = False,
    s3: S3Config | None = None,
) -> RunSummary:
    """The nightly job without Airflow (``bloodnet screen``): the same functions, in order."""
    found = discover(source_uri, db_url, prefix=prefix, run_id=run_id, rescan=rescan,
                     output_uri=output_uri, s3=s3)
    bar = None
    try:
        validate_and_record(found.source_uri, db_url, found.run_id, prefix=prefix, site=site,
                            s3=s3)
        batches = plan_batches(db_url, found.run_id, batch_size)
        counts = []
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=sum(map(len, batches)), unit="study", desc="screening")
        for batch in batches:
            counts.append(infer_batch(found.source_uri, db_url, batch, found.run_id,
                                      model_path, output_uri=output_uri,
                                      write_dicom=write_dicom, s3=s3))
            if bar is not None:
                bar.update(len(batch))
        return summarise_run(db_url, found.run_id, counts)
    except BaseException as exc:  # incl. Ctrl-C: the run is over either way
        fail_run(db_url, found.run_id, exc)
        raise
    finally:
        if bar is not None:
            bar.close()
