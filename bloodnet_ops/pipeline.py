"""Discovery → headers → grouping → selection → header suite → HU suite, for a whole source.

Every object listed is accounted for exactly once: it is either in one study's ``keys`` (all of
the study's series, localizers and bone kernels included) or in ``unreadable``. Pixel data is
fetched only for the selected series of studies that passed the header suite, one study at a
time with the next study's GETs in flight, so memory stays flat however many studies there are.

The *site* of a study is its InstitutionName; when no header carries one, the first component of
its keys (``site-a/...``, the usual archive layout); else ``unknown``. It is only a grouping label
for drift and dashboards, never used to find studies.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bloodnet_ops.headers import fetch_error, read_headers
from bloodnet_ops.hu import PADDING_HU, HUVolume, load_series, measure
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
from bloodnet_ops.validation_rules import series_rows

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
T = TypeVar("T")

_REASON_ORDER = {r: i for i, r in enumerate(Reason)}


@dataclass(slots=True)
class _Plan:
    """One study on its way through the pipeline."""

    study_uid: str
    headers: list[SliceHeader]
    selection: SeriesSelection
    duplicates: Duplicates | None = None
    series_keys: list[str] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    rejecting: set[Reason] = field(default_factory=set)
    checks: list[CheckResult] = field(default_factory=list)
    hu: HUStats | None = None
    n_slices: int = 0
    anatomy: str = "unknown"

    def add(self, reasons: Sequence[Reason], rejecting: set[Reason]) -> None:
        for r in reasons:
            if r not in self.reasons:
                self.reasons.append(r)
        self.rejecting |= rejecting


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
    """
    t0 = time.perf_counter()
    objs = list(objects) if objects is not None else list(source.list())
    objs = list({o.key: o for o in objs}.values())  # a key listed twice is one object
    parsed = read_headers(source, objs, workers=workers)
    headers = [p for p in parsed if isinstance(p, SliceHeader)]
    unreadable = [p for p in parsed if isinstance(p, UnreadableObject)]
    t_headers = time.perf_counter()
    if progress:
        progress("headers", len(objs), len(objs))

    plans = []
    for study_uid, series in group_by_study(headers).items():
        selection = select_series(study_uid, series)
        study_headers = [h for hs in series.values() for h in hs]
        plan = _Plan(study_uid, study_headers, selection)
        plan.add(selection.reasons, set(selection.reasons))
        if selection.reasons:
            plan.checks.append(_selection_check(selection))
        plans.append(plan)

    # header suite over every selected series at once
    rows: list[dict[str, Any]] = []
    for plan in plans:
        sel = plan.selection
        if sel.series_uid is None or sel.reasons:
            plan.series_keys = [h.key for h in sel.slices]
            continue
        facts = series_rows(sel, plan.headers)
        plan.duplicates = facts.duplicates
        plan.n_slices = len(facts.rows)
        plan.anatomy = facts.rows[0]["anatomy"] if facts.rows else "unknown"
        plan.series_keys = list(dict.fromkeys(r["key"] for r in facts.rows))  # frames share one
        rows.extend(facts.rows)
    outcome = run_suite("header", rows)
    for plan in plans:
        plan.checks.extend(outcome.checks.get(plan.study_uid, []))
        plan.add(outcome.reasons.get(plan.study_uid, []), outcome.rejecting.get(plan.study_uid,
                                                                                 set()))
    t_header_suite = time.perf_counter()

    if hu_check:
        _hu_stage(source, plans, workers=workers, progress=progress)
    t_hu = time.perf_counter()

    studies = [_result(p) for p in plans]
    report = ValidationReport(studies=studies, unreadable=unreadable, objects=objs)
    _check_accounting(report)
    log.info(
        "validated %d objects: %d studies (%d accepted), %d unreadable; headers %.2fs, "
        "header suite %.2fs, HU %.2fs",
        len(objs), len(studies), sum(s.verdict != Verdict.REJECT for s in studies),
        len(unreadable), t_headers - t0, t_header_suite - t_headers, t_hu - t_header_suite,
    )
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
    source: Source, plans: list[_Plan], *, workers: int, progress: Progress | None
) -> None:
    todo = [p for p in plans if p.series_keys and not p.rejecting and p.selection.series_uid]
    hu_rows = []
    jobs = [(p, p.series_keys + _duplicate_keys(p)) for p in todo]
    for n, (plan, blobs) in enumerate(prefetched(source, jobs, workers=workers), 1):
        hu_rows.append(_hu_row(plan, blobs))
        if progress:
            progress("pixels", n, len(todo))
    outcome = run_suite("hu", hu_rows)
    for plan in todo:
        plan.checks.extend(outcome.checks.get(plan.study_uid, []))
        plan.add(outcome.reasons.get(plan.study_uid, []), outcome.rejecting.get(plan.study_uid,
                                                                                 set()))


def _duplicate_keys(plan: _Plan) -> list[str]:
    """Keys of dropped copies that look re-sent: their bytes are compared with the kept copy."""
    dups = plan.duplicates
    if dups is None or not dups.resent:
        return []
    return [key for sop in sorted(dups.resent) for key in dups.extra_keys.get(sop, [])]


def _hu_row(plan: _Plan, blobs: list[bytes] | BaseException) -> dict[str, Any]:
    row: dict[str, Any] = {"study_uid": plan.study_uid, "decoded": False, "air_peak": None,
                           "tissue_median": None, "outside_fraction": None,
                           "duplicate_bytes_differ": False, "lung_fraction": None}
    if isinstance(blobs, BaseException):
        if not isinstance(blobs, Exception) or fetch_error(blobs) is None:
            raise blobs  # an outage, not bad data: fail loudly rather than quarantine
        log.warning("pixel fetch failed for a study: %s", fetch_error(blobs))
        return row
    n = len(plan.series_keys)
    series_blobs, extra = blobs[:n], blobs[n:]
    if extra:
        row["duplicate_bytes_differ"] = _copies_differ(plan, series_blobs, extra)
    try:
        volume = load_series(series_blobs, padding_mask=True)
        m = measure(volume)
    except Exception as exc:  # noqa: BLE001 - any decoder error is this study's verdict
        log.info("pixel decoding failed: %s", type(exc).__name__)
        return row
    finally:
        del series_blobs
    del volume
    row["decoded"] = True
    # no air visible: where the darkest voxels are instead (unless padding may hide the air)
    row["air_peak"] = m.air_peak if m.air_peak is not None else (
        m.dark_level if m.padding_fraction < 0.01 else None)
    # no tissue on the central slices: report the brightest level found, which fails the range
    row["tissue_median"] = (m.brain_median if m.brain_median is not None
                            else m.p99 if math.isfinite(m.p99) else PADDING_HU)
    row["outside_fraction"] = m.outside_fraction
    if plan.anatomy == "unknown":  # the header named no region: let the pixels speak
        row["lung_fraction"] = m.lung_fraction
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
    sop_of = {h.key: h.sop_uid for h in plan.headers}
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
    for h in plan.selection.slices + plan.headers:
        if h.institution:
            return h.institution
    first = min(h.key for h in plan.headers)
    return first.split("/", 1)[0] if "/" in first else "unknown"


def _result(plan: _Plan) -> StudyResult:
    reasons = sorted(plan.reasons, key=_REASON_ORDER.__getitem__)
    verdict = verdict_for(reasons, rejecting=plan.rejecting)
    ref = plan.selection.slices[0] if plan.selection.slices else plan.headers[0]
    ps = ref.pixel_spacing
    n = plan.n_slices or len(plan.series_keys)
    return StudyResult(
        study_uid=plan.study_uid,
        series_uid=plan.selection.series_uid,
        site=_site(plan),
        verdict=verdict,
        reasons=reasons,
        keys=sorted(h.key for h in plan.headers),
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


# --------------------------------------------------------------------------- volumes
def load_study_volume(source: Source, study: StudyResult, *, workers: int = 16) -> HUVolume:
    """Full GETs of the selected series of ``study`` and its HU volume."""
    if not study.series_keys:
        raise ValueError("study has no selected series")
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="get") as pool:
        blobs = list(pool.map(source.get, study.series_keys))
    return load_series(blobs)


def iter_scorable(
    source: Source, report: ValidationReport, *, workers: int = 16
) -> Iterator[tuple[StudyResult, HUVolume]]:
    """Yield ``(study, volume)`` for every study that is not rejected, one at a time, with the
    next study's GETs running while the caller scores the current one."""
    jobs = [(s, list(s.series_keys)) for s in report.studies
            if s.verdict != Verdict.REJECT and s.series_keys]
    for study, blobs in prefetched(source, jobs, workers=workers):
        if isinstance(blobs, BaseException):
            raise blobs
        volume = load_series(blobs)
        del blobs
        yield study, volume
