"""Discovery → headers → grouping → selection → header suite → HU suite, for a whole source.

Every object listed is accounted for exactly once: it is either in one study's ``keys`` (all of
the study's series, localizers and bone kernels included) or in ``unreadable``. Pixel data is
fetched only for the selected series of studies that passed the header suite, one study at a
time with the next study's GETs in flight.

Memory stays flat however many objects a night has (:func:`iter_validation`): headers are kept as
compact records (repeated values shared), a large night is validated in partitions of whole
studies whose headers wait in temporary files, and each partition's verdicts can be recorded
before the next partition is loaded.

The *site* of a study is its InstitutionName; when no header carries one, the first component of
its keys (``site-a/...``, the usual archive layout); else ``unknown``. It is only a grouping label
for drift and dashboards, never used to find studies.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import TypeVar

from bloodnet_ops.header_partitions import HeaderPartitions
from bloodnet_ops.headers import fetch_error, read_headers
from bloodnet_ops.hu import PADDING_HU, load_series
from bloodnet_ops.hu_stats import measure
from bloodnet_ops.reasons import Reason, Verdict, verdict_for
from bloodnet_ops.records import (
    CheckResult,
    HUStats,
    ObjectRef,
    SeriesSelection,
    SliceHeader,
    StudyResult,
    UnreadableObject,
    ValidationReport,
)
from bloodnet_ops.series import Duplicates, group_by_study, select_series
from bloodnet_ops.storage import Source
from bloodnet_ops.validation import run_suite
from bloodnet_ops.validation_rules import HeaderRow, HURow, series_rows

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
T = TypeVar("T")

_REASON_ORDER = {r: i for i, r in enumerate(Reason)}

#: Objects whose headers are held in memory at once. A larger night is validated in partitions
#: of whole studies (headers spilled to temporary files by study), so that memory does not grow
#: with the night; 16k objects is ~220 routine head-CT studies with their extra series.
PARTITION_OBJECTS = 16_384
#: Objects whose headers are read per round of ranged GETs.
READ_CHUNK = 2_048
#: Environment variable that caps the size of a series that is loaded (voxels).
MAX_VOXELS_ENV = "BLOODNET_MAX_SERIES_VOXELS"
#: 2,048 slices of 512 x 512: ~1 GiB of int16 pixels, ~2 GiB as float32 HU.
DEFAULT_MAX_SERIES_VOXELS = 2048 * 512 * 512


@dataclass(slots=True)
class _Plan:
    """One study on its way through the pipeline. Of the study's headers it keeps only the
    selected series (``selection.slices``) and what the verdict needs from the others."""

    study_uid: str
    selection: SeriesSelection
    keys: list[str]  #: every object of the study (all series), sorted
    ref: SliceHeader  #: the header the study's metadata comes from
    institution: str  #: the first InstitutionName found (selected series first)
    described: SliceHeader | None  #: a header with a StudyDescription (anatomy hint)
    duplicates: Duplicates | None = None
    series_keys: list[str] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    rejecting: set[Reason] = field(default_factory=set)
    checks: list[CheckResult] = field(default_factory=list)
    hu: HUStats | None = None
    n_slices: int = 0
    anatomy: str = "unknown"
    detail: str = ""

    def add(self, reasons: Sequence[Reason], rejecting: set[Reason]) -> None:
        for r in reasons:
            if r not in self.reasons:
                self.reasons.append(r)
        self.rejecting |= rejecting


@dataclass(slots=True)
class _Tally:
    """Progress across partitions (the pixel stage's total grows partition by partition)."""

    done: int = 0
    total: int = 0


def validate_source(
    source: Source,
    *,
    objects: Sequence[ObjectRef] | None = None,
    hu_check: bool = True,
    workers: int = 16,
    progress: Progress | None = None,
) -> ValidationReport:
    """Validate every object under ``source`` (or the given ``objects``, e.g. from a manifest).

    Parameters
    ----------
    source
        A :class:`storage.LocalSource` or :class:`storage.S3Source`.
    objects
        Objects to validate; default: everything ``source.list()`` returns.
    hu_check
        Fetch the pixels of series that pass the header suite and run the HU suite.
    workers
        Concurrent GETs.
    progress
        Optional ``callback(stage, done, total)`` for a progress bar.

    The whole report is returned, so memory grows with the studies' verdicts (a few KiB each);
    :func:`iter_validation` hands them over partition by partition instead.
    """
    t0 = time.perf_counter()
    objs = list(objects) if objects is not None else list(source.list())
    objs = list({o.key: o for o in objs}.values())  # a key listed twice is one object
    studies: list[StudyResult] = []
    unreadable: list[UnreadableObject] = []
    for part in iter_validation(source, objs, total=len(objs), hu_check=hu_check,
                                workers=workers, progress=progress):
        studies.extend(part.studies)
        unreadable.extend(part.unreadable)
    studies.sort(key=lambda s: s.study_uid)
    report = ValidationReport(studies=studies, unreadable=unreadable, objects=objs)
    _check_accounting(report)
    log.info(
        "validated %d objects: %d studies (%d accepted), %d unreadable in %.2fs",
        len(objs), len(studies), sum(s.verdict != Verdict.REJECT for s in studies),
        len(unreadable), time.perf_counter() - t0,
    )
    return report


def iter_validation(
    source: Source,
    objects: Iterable[ObjectRef],
    *,
    total: int | None = None,
    more: Callable[[list[str]], Iterable[ObjectRef]] | None = None,
    hu_check: bool = True,
    workers: int = 16,
    progress: Progress | None = None,
    partition_objects: int | None = None,
) -> Iterator[ValidationReport]:
    """Validate ``objects`` (distinct keys) and yield the verdicts in parts, each a complete
    :class:`ValidationReport` of its own objects: first the unreadable objects of each round of
    header reads, then the studies, one partition at a time. Every object is in exactly one part.

    Memory does not grow with the night: headers are read in rounds of :data:`READ_CHUNK`, and
    when ``total`` (the expected number of objects) exceeds ``partition_objects`` they are
    spilled to temporary files (encrypted) by a hash of their StudyInstanceUID, so that every
    partition holds whole studies and only one is in memory (~1 KiB per object on disk; default
    ``partition_objects``: :data:`PARTITION_OBJECTS`). The caller can record each part before
    the next is built.

    ``more(study_uids)``, called once after all ``objects`` are read, returns further objects of
    those studies (an incremental night revalidates a known study whole); they are read and
    validated with the rest.
    """
    per_part = partition_objects or PARTITION_OBJECTS
    n_parts = max(1, math.ceil((total or 0) / max(1, per_part)))
    tally = _Tally()
    with HeaderPartitions(n_parts) as parts:
        n_read = 0
        rounds: list[Iterable[ObjectRef]] = [objects]
        while rounds:
            for chunk in _chunks(rounds.pop(0), READ_CHUNK):
                bad = parts.add(read_headers(source, chunk, workers=workers))
                n_read += len(chunk)
                if progress:
                    progress("headers", n_read, max(total or 0, n_read))
                if bad:
                    yield ValidationReport([], bad, [ObjectRef(u.key, u.etag, u.size) for u in bad])
            if more is not None and parts.study_uids:
                uids, parts.study_uids = sorted(parts.study_uids), set()
                rounds.append(more(uids))
                more = None
        for headers in parts.drain():
            yield _validate_partition(source, headers, hu_check=hu_check, workers=workers,
                                      progress=progress, tally=tally)
            if n_parts > 1:  # the last partition's cyclic garbage (pandas, GX), before the next
                gc.collect()


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _validate_partition(
    source: Source,
    headers: list[SliceHeader],
    *,
    hu_check: bool,
    workers: int,
    progress: Progress | None,
    tally: _Tally,
) -> ValidationReport:
    """Selection, header suite and HU suite of the whole studies in ``headers`` (emptied: the
    plans keep only the selected series of each study)."""
    t0 = time.perf_counter()
    objects = [ObjectRef(h.key, h.etag, h.size) for h in headers]
    grouped = group_by_study(headers)
    headers.clear()
    plans = []
    for study_uid in list(grouped):
        series = grouped.pop(study_uid)  # the study's other series are dropped after selection
        selection = select_series(study_uid, series)
        study_headers = [h for hs in series.values() for h in hs]
        plan = _Plan(
            study_uid, selection,
            keys=sorted(h.key for h in study_headers),
            ref=selection.slices[0] if selection.slices else study_headers[0],
            institution=next((h.institution for h in (*selection.slices, *study_headers)
                              if h.institution), ""),
            described=next((h for h in study_headers if h.study_description), None),
        )
        del series, study_headers
        plan.add(selection.reasons, set(selection.reasons))
        if selection.reasons:
            plan.checks.append(_selection_check(selection))
        plans.append(plan)

    # header suite over every selected series of the partition at once
    rows: list[HeaderRow] = []
    for plan in plans:
        sel = plan.selection
        if sel.series_uid is None or sel.reasons:
            plan.series_keys = [h.key for h in sel.slices]
            continue
        facts = series_rows(sel, [plan.described] if plan.described else [])
        plan.duplicates = facts.duplicates
        plan.n_slices = len(facts.rows)
        plan.anatomy = facts.rows[0].anatomy if facts.rows else "unknown"
        plan.series_keys = list(dict.fromkeys(r.key for r in facts.rows))  # frames share one
        rows.extend(facts.rows)
    outcome = run_suite("header", rows)
    del rows
    for plan in plans:
        plan.checks.extend(outcome.checks.get(plan.study_uid, []))
        plan.add(outcome.reasons.get(plan.study_uid, []), outcome.rejecting.get(plan.study_uid,
                                                                                 set()))
    t_header_suite = time.perf_counter()

    if hu_check:
        _hu_stage(source, plans, workers=workers, progress=progress, tally=tally)
    studies = [_result(p) for p in plans]
    report = ValidationReport(studies=studies, unreadable=[], objects=objects)
    _check_accounting(report)
    log.debug("partition of %d objects, %d studies: header suite %.2fs, HU %.2fs",
              len(objects), len(studies), t_header_suite - t0,
              time.perf_counter() - t_header_suite)
    return report


def _selection_check(sel: SeriesSelection) -> CheckResult:
    reason = sel.reasons[0]
    return CheckResult(
        suite="selection",
        expectation="select_diagnostic_series",
        column=None,
        success=False,
        observed={"series": len(sel.candidates), "selected": sel.series_uid},
        reason=reason,
    )


# --------------------------------------------------------------------------- HU stage
def _hu_stage(
    source: Source, plans: list[_Plan], *, workers: int, progress: Progress | None,
    tally: _Tally,
) -> None:
    todo = [p for p in plans if p.series_keys and not p.rejecting and p.selection.series_uid]
    tally.total += len(todo)
    limit = max_series_voxels()
    hu_rows = []
    jobs = []
    for p in todo:
        voxels = _voxels(p)
        if voxels > limit:  # rejected before a single pixel is fetched
            p.detail = too_large_detail(voxels, limit)
            log.warning("series too large to load: %d voxels > %d (%s)", voxels, limit,
                        MAX_VOXELS_ENV)
            hu_rows.append(_empty_hu_row(p))
            tally.done += 1
        else:
            jobs.append((p, p.series_keys + _duplicate_keys(p)))
    for plan, blobs in prefetched(source, jobs, workers=workers):
        hu_rows.append(_hu_row(plan, blobs))
        tally.done += 1
        if progress:
            progress("pixels", tally.done, tally.total)
    outcome = run_suite("hu", hu_rows)
    for plan in todo:
        plan.checks.extend(outcome.checks.get(plan.study_uid, []))
        plan.add(outcome.reasons.get(plan.study_uid, []), outcome.rejecting.get(plan.study_uid,
                                                                                 set()))


def max_series_voxels() -> int:
    """The largest series (slices x rows x columns) that is loaded: ``BLOODNET_MAX_SERIES_VOXELS``,
    default :data:`DEFAULT_MAX_SERIES_VOXELS`. A larger one is rejected (``pixel_decode_failed``,
    with a detail that says so) instead of exhausting the worker's memory."""
    from bloodnet_ops.settings import current

    return current().max_series_voxels


def too_large_detail(voxels: int | None, limit: int, *, oom: bool = False) -> str:
    """The quarantine detail of a series rejected for its size (sizes only, no PHI)."""
    where = (f"the size limit is {limit:,} voxels (slices x rows x columns), set by "
             f"{MAX_VOXELS_ENV}")
    if oom:
        size = f"{voxels:,} voxels" if voxels else "the series"
        return f"series too large: out of memory loading {size}; {where}"
    return f"series too large: {voxels or 0:,} voxels exceed the limit; {where}"


def _voxels(plan: _Plan) -> int:
    sl = plan.selection.slices
    matrix = max(((h.rows or 0) * (h.columns or 0) for h in sl), default=0)
    return matrix * (plan.n_slices or len(sl))


def _duplicate_keys(plan: _Plan) -> list[str]:
    """Keys of dropped copies that look re-sent: their bytes are compared with the kept copy."""
    dups = plan.duplicates
    if dups is None or not dups.resent:
        return []
    return [key for sop in sorted(dups.resent) for key in dups.extra_keys.get(sop, [])]


def _empty_hu_row(plan: _Plan) -> HURow:
    """The HU row of a series whose pixels were not decoded (fails ``pixels_decoded``)."""
    return HURow(plan.study_uid)


def _hu_row(plan: _Plan, blobs: list[bytes] | BaseException) -> HURow:
    row = _empty_hu_row(plan)
    if isinstance(blobs, BaseException):
        if not isinstance(blobs, Exception) or fetch_error(blobs) is None:
            raise blobs  # an outage, not bad data: fail loudly rather than quarantine
        log.warning("pixel fetch failed for a study: %s", fetch_error(blobs))
        return row
    n = len(plan.series_keys)
    series_blobs, extra = blobs[:n], blobs[n:]
    if extra:
        row.duplicate_bytes_differ = _copies_differ(plan, series_blobs, extra)
    try:
        volume = load_series(series_blobs, padding_mask=True)
        m = measure(volume)
    except MemoryError:
        log.warning("out of memory loading a series")
        plan.detail = too_large_detail(_voxels(plan), max_series_voxels(), oom=True)
        return row
    except Exception as exc:  # noqa: BLE001 - any decoder error is this study's verdict
        log.info("pixel decoding failed: %s", type(exc).__name__)
        return row
    finally:
        del series_blobs
    del volume
    row.decoded = True
    # no air visible: where the darkest voxels are instead (unless padding may hide the air)
    row.air_peak = m.air_peak if m.air_peak is not None else (
        m.dark_level if m.padding_fraction < 0.01 else None)
    # no tissue on the central slices: report the brightest level found, which fails the range
    # brain where air is (the mode), not a median that air outside the head can dilute into range
    level = m.tissue_level if m.tissue_level is not None else m.brain_median
    row.tissue_median = (level if level is not None
                            else m.p99 if math.isfinite(m.p99) else PADDING_HU)
    row.outside_fraction = m.outside_fraction
    if plan.anatomy == "unknown":  # the header named no region: let the pixels speak
        row.lung_fraction = m.lung_fraction
    plan.hu = HUStats(
        air_peak=m.air_peak, brain_median=m.brain_median, p01=m.p01, p99=m.p99,
        min=m.min, max=m.max, mean=m.mean, std=m.std,
    )
    return row


def _copies_differ(plan: _Plan, series_blobs: list[bytes], extra: list[bytes]) -> bool:
    assert plan.duplicates is not None
    kept_bytes = {k: b for k, b in zip(plan.series_keys, series_blobs, strict=True)}
    kept_key = {h.sop_uid: h.key for h in plan.duplicates.unique}
    extra_keys = _duplicate_keys(plan)
    sop_of = {k: sop for sop, keys in plan.duplicates.extra_keys.items() for k in keys}
    return any(
        kept_bytes.get(kept_key[sop_of[k]]) != b for k, b in zip(extra_keys, extra, strict=True)
    )


def prefetched(
    source: Source, jobs: Sequence[tuple[T, list[str]]], *, workers: int = 16
) -> Iterator[tuple[T, list[bytes] | BaseException]]:
    """Yield ``(item, blobs)`` per job in order, with the next job's GETs already running.

    At most two jobs' bytes are in memory at once. A job whose GETs fail yields the exception
    instead of the blobs (an object deleted since listing must not stop the night)."""
    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="get") as pool:

        def start(keys: list[str]) -> list[Future[bytes]]:
            return [pool.submit(source.get, k) for k in keys]

        pending = start(jobs[0][1])
        for i, (item, _keys) in enumerate(jobs):
            futures = pending
            pending = start(jobs[i + 1][1]) if i + 1 < len(jobs) else []
            try:
                blobs: list[bytes] | BaseException = [f.result() for f in futures]
            except Exception as exc:  # noqa: BLE001 - reported per study by the caller
                blobs = exc
            yield item, blobs
            del blobs, futures


# --------------------------------------------------------------------------- results
def _site(plan: _Plan) -> str:
    if plan.institution:
        return plan.institution
    first = plan.keys[0]
    return first.split("/", 1)[0] if "/" in first else "unknown"


def _result(plan: _Plan) -> StudyResult:
    reasons = sorted(plan.reasons, key=_REASON_ORDER.__getitem__)
    verdict = verdict_for(reasons, rejecting=plan.rejecting)
    ref = plan.ref
    ps = ref.pixel_spacing
    n = plan.n_slices or len(plan.series_keys)
    return StudyResult(
        study_uid=plan.study_uid,
        series_uid=plan.selection.series_uid,
        site=_site(plan),
        verdict=verdict,
        reasons=reasons,
        keys=plan.keys,
        series_keys=list(plan.series_keys),
        patient_id=ref.patient_id,
        accession_number=ref.accession_number,
        study_date=ref.study_date,
        manufacturer=ref.manufacturer,
        manufacturer_model=ref.manufacturer_model,
        kernel=ref.kernel,
        kvp=ref.kvp,
        slice_thickness=ref.slice_thickness,
        pixel_spacing=float(ps[0]) if ps else None,
        n_slices=n,
        checks=plan.checks,
        hu=plan.hu,
        detail=plan.detail if verdict == Verdict.REJECT else "",
    )


def _check_accounting(report: ValidationReport) -> None:
    """Every listed object is in exactly one study or in unreadable (a broken invariant is a
    bug here, not bad data, so it raises)."""
    seen: dict[str, int] = {}
    for s in report.studies:
        for k in s.keys:
            seen[k] = seen.get(k, 0) + 1
    for u in report.unreadable:
        seen[u.key] = seen.get(u.key, 0) + 1
    listed = [o.key for o in report.objects]
    twice = [k for k, c in seen.items() if c > 1]
    missing = set(listed) - set(seen)
    if twice or missing:
        raise AssertionError(f"accounting broken: {len(twice)} twice, {len(missing)} missing")
