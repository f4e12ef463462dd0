"""HU volumes of validated studies, fetched from the source (evaluation, training, explain)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from bloodnet_ops.hu import HUVolume, load_series
from bloodnet_ops.pipeline import prefetched
from bloodnet_ops.reasons import Verdict
from bloodnet_ops.records import StudyResult, ValidationReport
from bloodnet_ops.storage import Source


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
