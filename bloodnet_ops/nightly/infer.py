"""Step 4: score one batch: fetch the chosen series once, BloodNet, SEG + SR, findings.

The series comes from validation (``validation_results.series_objects``, read through
:mod:`bloodnet_ops.db.scoring`): its keys in slice order and their ETags. Each blob is fetched
once and parsed once (pydicom), and the same datasets give the HU volume and the SEG/SR's
references. A study that fails to load or score is quarantined with a reason; an outage of the
store re-raises, so the task retries with backoff instead of quarantining good data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from bloodnet_ops import PREPROCESSING_VERSION
from bloodnet_ops.db import findings as findings_db
from bloodnet_ops.db import runs
from bloodnet_ops.db.scoring import ScoringItem, record_scoring_failures, scoring_items
from bloodnet_ops.nightly.common import default_output_uri, engine, open_uri
from bloodnet_ops.nightly.records import BatchCounts
from bloodnet_ops.reasons import Reason
from bloodnet_ops.storage import S3Config

log = logging.getLogger(__name__)

_NETWORK_MODULES = {"botocore", "boto3", "urllib3"}


@lru_cache(maxsize=2)
def predictor_for(model_path: str | None):
    """One model per process and weights file: mapped tasks in one worker reuse it."""
    from bloodnet_ops.model.predictor import Predictor

    return Predictor(model_path)


def load_series_once(source, item: ScoringItem, *, workers: int = 16):
    """Full GETs of the chosen series, each parsed once: ``(HUVolume, datasets)``; the datasets
    (with their pixels) also feed the SEG/SR, so nothing is fetched or parsed twice."""
    from concurrent.futures import ThreadPoolExecutor
    from io import BytesIO

    import pydicom

    from bloodnet_ops.hu import load_series

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="get") as pool:
        blobs = list(pool.map(source.get, item.series_keys))
    datasets = [pydicom.dcmread(BytesIO(b)) for b in blobs]
    del blobs
    return load_series(datasets), datasets


def _is_outage(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError | TimeoutError) or (
        type(exc).__module__.split(".")[0] in _NETWORK_MODULES)


def failure_reason(exc: Exception) -> Reason:
    """Why a study that passed validation could not be loaded. An outage (connection errors,
    5xx) re-raises: the task then retries with backoff instead of quarantining good data."""
    from bloodnet_ops.headers import fetch_error

    if fetch_error(exc):
        return Reason.UNREADABLE  # deleted or forbidden since validation
    if _is_outage(exc):
        raise exc
    return Reason.PIXEL_DECODE_FAILED


def failure_detail(exc: BaseException) -> str:
    """The quarantine detail of a study that failed at load or inference (no message text:
    it can carry keys)."""
    if isinstance(exc, MemoryError):
        from bloodnet_ops.pipeline import max_series_voxels, too_large_detail

        return too_large_detail(None, max_series_voxels(), oom=True)
    return f"failed after validation: {type(exc).__name__}"


Failure = tuple[ScoringItem, Reason, str]  #: a study that failed after validation, why, detail


@dataclass(slots=True)
class Scored:
    item: ScoringItem
    volume: Any  #: HUVolume
    datasets: list[Any]  #: the series' datasets (pydicom)
    finding: Any  #: StudyFinding
    blood: Any  #: (z, y, x) float32 or None
    load_s: float


def score_items(predictor, source, items: Sequence[ScoringItem], *, keep_masks: bool,
                failed: list[Failure]) -> Iterator[Scored]:
    """Load and score ``items``. The Predictor's loading thread pulls the volumes (GETs and
    decoding) while the previous slices compute. A study that cannot be loaded or scored is
    appended to ``failed`` with a reason and a detail, and the others go on."""
    loaded: dict[str, tuple[ScoringItem, Any, list[Any], float]] = {}
    done: set[str] = set()

    def load(item: ScoringItem) -> bool:
        t0 = time.perf_counter()
        try:
            volume, datasets = load_series_once(source, item)
        except Exception as exc:  # noqa: BLE001 - bad data is recorded; an outage re-raises
            reason = failure_reason(exc)
            log.warning("study failed to load (%s): %s: %s", reason.value, type(exc).__name__,
                        str(exc)[:200])
            failed.append((item, reason, failure_detail(exc)))
            return False
        loaded[item.study_uid] = (item, volume, datasets, time.perf_counter() - t0)
        return True

    def stream() -> Iterator[tuple[str, str, Any]]:
        for item in items:
            if load(item):
                yield item.study_uid, item.series_uid, loaded[item.study_uid][1]

    def scored(finding, blood) -> Scored:
        item, volume, datasets, load_s = loaded.pop(finding.study_uid)
        done.add(item.study_uid)
        return Scored(item, volume, datasets, finding, blood, load_s)

    try:
        for finding, blood in predictor.predict_iter(stream(), keep_masks=keep_masks):
            yield scored(finding, blood)
        return
    except Exception as exc:  # find the study that broke the stream
        if _is_outage(exc):
            raise
        log.warning("batch inference failed (%s); scoring the rest one by one",
                    type(exc).__name__)
    gone = done | {i.study_uid for i, _, _ in failed}
    for item in items:
        if item.study_uid in gone or not (item.study_uid in loaded or load(item)):
            continue
        one = (item.study_uid, item.series_uid, loaded[item.study_uid][1])
        try:
            ((finding, blood),) = list(predictor.predict_iter([one], keep_masks=keep_masks))
        except Exception as exc:  # noqa: BLE001 - the model cannot score this study
            log.warning("study failed while scoring: %s: %s", type(exc).__name__,
                        str(exc)[:200])
            loaded.pop(item.study_uid)
            failed.append((item, Reason.PIXEL_DECODE_FAILED, failure_detail(exc)))
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
) -> BatchCounts:
    """Score one batch of studies and upsert their findings with provenance.

    Per study: full GETs of the chosen series, the HU volume, BloodNet, a DICOM SEG + SR under
    ``output_uri``, and one ``findings`` row (study/series UIDs, site, patient pseudonym,
    probability, decision, volume, subtypes, model version + weights hash, preprocessing
    version, input ETags, run id, seconds). A study that fails to load or score is quarantined
    and counted, never raised.
    """
    t0 = time.perf_counter()
    source = open_uri(source_uri, s3=s3)
    db = engine(db_url)
    known = scoring_items(db, study_uids)
    items = [i for i in known if i.scorable]
    stale = [i.study_uid for i in known if i.series_uid and not i.series_objects]
    if stale:
        log.warning("%d studies were validated before their series keys were stored "
                    "(migration 0004): rescan them to score them", len(stale))
    predictor = predictor_for(model_path)
    runs.register_model_version(
        db, model_version=predictor.model_version, weights_sha256=predictor.weights_sha256,
        threshold=float(predictor.threshold), variant=predictor.variant,
    )
    sink = None
    if write_dicom:
        sink = open_uri(output_uri or default_output_uri(source.uri), create=True, s3=s3)
    rows: list[findings_db.FindingRow] = []
    failed: list[Failure] = []
    load_s = infer_s = write_s = 0.0
    for done in score_items(predictor, source, items, keep_masks=sink is not None,
                            failed=failed):
        # the Predictor's own preparation counts as inference; loading is GETs and decoding
        finding = replace(done.finding, load_seconds=round(done.load_s, 4),
                          infer_seconds=round(done.finding.infer_seconds
                                              + done.finding.load_seconds, 4))
        seg_uri = sr_uri = None
        if sink is not None and done.blood is not None:
            t1 = time.perf_counter()
            try:
                seg_uri, sr_uri = write_derived(sink, done, finding, predictor.model_version)
            except Exception as exc:  # noqa: BLE001 - the finding stands without its DICOM
                log.warning("DICOM SEG/SR not written: %s: %s", type(exc).__name__,
                            str(exc)[:200])
            write_s += time.perf_counter() - t1
        load_s += finding.load_seconds
        infer_s += finding.infer_seconds
        rows.append(findings_db.FindingRow.from_finding(
            finding, done.item.as_study(), model_version=predictor.model_version,
            weights_sha256=predictor.weights_sha256, run_id=run_id,
            input_etags={k: e for k, e in done.item.series_objects or () if e},
            preprocessing_version=PREPROCESSING_VERSION, seg_key=seg_uri, sr_key=sr_uri,
            patient_key=done.item.patient_key,
        ))
    findings_db.upsert_findings(db, rows)
    record_scoring_failures(db, source_uri=source.uri, run_id=run_id, failures=failed)
    counts = BatchCounts(
        n_studies=len(study_uids),
        n_scored=len(rows),
        n_positive=sum(r.positive for r in rows),
        n_failed=len(failed),
        n_skipped=len(study_uids) - len(items),  # gone, rejected by now, or validated before 0004
        model_version=predictor.model_version,
        load_s=round(load_s, 3),
        infer_s=round(infer_s, 3),
        write_s=round(write_s, 3),
        wall_s=round(time.perf_counter() - t0, 3),
    )
    log.info("batch scored %d of %d studies (%d failed) in %.1fs", counts.n_scored,
             counts.n_studies, counts.n_failed, counts.wall_s)
    return counts


def write_derived(sink, done: Scored, finding, model_version: str) -> tuple[str | None, str]:
    """SEG + SR under ``<output>/<model_version>/<study_uid>/``; returns their full URIs (no SEG
    when the mask is empty)."""
    from bloodnet_ops import dicom_out

    seg_key, sr_key = dicom_out.write_outputs(
        sink, done.item.as_study(), done.volume, finding, done.blood,
        model_version=model_version, out_prefix=model_version, source_datasets=done.datasets,
    )
    return (f"{sink.uri}/{seg_key}" if seg_key else None), f"{sink.uri}/{sr_key}"
