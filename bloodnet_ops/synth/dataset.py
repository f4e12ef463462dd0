"""``generate_dataset``: a multi-site synthetic head-CT data set on disk (DESIGN.md §3-4).

Layout: ``DIR/<site>/<study_uid>/<series_uid>/<sop_uid>.dcm``, ``DIR/labels.csv``,
``DIR/masks/<study_uid>.npz`` (``mask`` uint8 (z, y, x) with codes 1..5 = EDH, SDH, SAH, IPH,
IVH, z ascending along the slice normal of the diagnostic series; ``positions`` (z,) mm;
``spacing`` (dz, dy, dx) mm), ``DIR/reads.csv``, with ``fault_rate > 0`` ``DIR/faults.csv``, and
with ``drift_site`` ``DIR/drift.json`` (:class:`.drift.DriftRecord`).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bloodnet_ops.synth import faults
from bloodnet_ops.synth.drift import DriftSpec, apply_drift, parse_date
from bloodnet_ops.synth.plan import StudyPlan, plan_studies
from bloodnet_ops.synth.reads import READS_HEADER, LesionNote, StudyTruth, make_reads
from bloodnet_ops.synth.study import RenderedStudy, render_study
from bloodnet_ops.synth.tissue import SUBTYPE_NAMES, Subtype
from bloodnet_ops.synth.vendors import site_profiles
from bloodnet_ops.synth.writer import write_series

LABELS_HEADER = ("study_uid", "site", "ich", "subtypes", "volume_ml", "series_uid")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class SynthSummary:
    """What ``generate_dataset`` wrote."""

    counts: dict[str, int]  #: studies, positives, negatives, faults, files, series, per subtype...
    sites: list[str]
    seconds: float
    paths: dict[str, Path] = field(default_factory=dict)  #: root, labels, reads, masks, faults


@dataclass
class StudyOutcome:
    """A worker's report on one study (small, picklable)."""

    index: int
    label: tuple[str, str, int, str, float, str]
    truth: StudyTruth
    faults: list[faults.FaultRecord]
    files: int
    subtype_ml: dict[str, float]


def _notes(st: RenderedStudy, present: set[str]) -> tuple[LesionNote, ...]:
    vox = st.geometry.pixel_spacing**2 * st.geometry.thickness / 1000.0
    notes = []
    for les in st.lesions:
        name = les.subtype.name
        if name not in present:
            continue
        ml = float(np.count_nonzero(st.labels == int(les.subtype))) * vox
        size = max(2.0, les.size[2]) if name in ("EDH", "SDH") else 2 * float(np.mean(les.size))
        notes.append(LesionNote(name, les.kind, les.side, float(size), ml))
    return tuple(notes)


def generate_one(plan: StudyPlan, root: Path) -> StudyOutcome:
    """Render, write and (for fault studies) damage one study; write its mask."""
    st = render_study(plan)
    rng = np.random.default_rng([plan.seed, 0xFA17])
    fs = faults.setup(st, rng)
    study_dir = root / plan.site / plan.study_uid
    written = {}
    for kind, uid in (("localizer", plan.localizer_uid), ("soft", plan.soft_uid),
                      ("bone", plan.bone_uid)):
        written[kind] = write_series(st, kind, study_dir / uid,
                                     overrides=fs.overrides.get(kind),
                                     skip=fs.skip if kind == "soft" else ())
    records, lost = faults.after_write(st, root, written, rng)
    geo = st.geometry
    keep = [k for k in range(geo.positions.size)
            if k not in fs.skip and float(geo.positions[k]) not in lost]
    mask = st.labels[keep]
    positions = geo.positions[keep].astype(np.float64)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / "masks" / f"{plan.study_uid}.npz", mask=mask, positions=positions,
                        spacing=np.array([geo.thickness, geo.pixel_spacing, geo.pixel_spacing]))
    codes = {int(c) for c in np.unique(mask) if c}
    present = [Subtype(c).name for c in sorted(codes)]
    vox_ml = geo.pixel_spacing**2 * geo.thickness / 1000.0
    volume = float(np.count_nonzero(mask)) * vox_ml
    per = {Subtype(c).name: float(np.count_nonzero(mask == c)) * vox_ml for c in codes}
    shift = st.anatomy.midline_shift if st.anatomy is not None else 0.0
    truth = StudyTruth(plan.study_uid, plan.accession, plan.site, plan.study_date,
                       tuple(present), _notes(st, set(present)), shift)
    extra = 1 if plan.fault in ("non_dicom", "empty", "duplicate") else 0
    files = sum(len(s.paths) for s in written.values()) + extra
    label = (plan.study_uid, plan.site, int(bool(present)), ";".join(present), round(volume, 3),
             plan.soft_uid)
    return StudyOutcome(plan.index, label, truth, records, files, per)


def _work(args: tuple[StudyPlan, str]) -> StudyOutcome:
    return generate_one(args[0], Path(args[1]))


@contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Workers inherit the environment at start: keep BLAS from oversubscribing the cores."""
    old = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update(dict.fromkeys(_THREAD_VARS, "1"))
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: CPU seconds per 256² study (measured: ~0.45); a pool only pays off above a few seconds,
#: because every spawned worker first imports numpy, scipy and pydicom.
_SECONDS_PER_STUDY = 0.45
_POOL_THRESHOLD_S = 4.0


def _default_workers(studies: int, matrix: int) -> int:
    if studies * _SECONDS_PER_STUDY * (matrix / 256) ** 2 < _POOL_THRESHOLD_S:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, studies, 16))


def _progress(total: int, enabled: bool | None):
    from tqdm import tqdm

    return tqdm(total=total, unit="study", desc="synth", file=sys.stderr,
                disable=(not sys.stderr.isatty()) if enabled is None else not enabled)


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def generate_dataset(
    out: Path,
    *,
    studies: int,
    sites: int,
    seed: int,
    positive_rate: float = 0.5,
    matrix: int = 256,
    reads_miss_rate: float = 0.05,
    fault_rate: float = 0.0,
    workers: int | None = None,
    progress: bool | None = None,
    nights: int | None = None,
    drift_site: str | None = None,
    drift_from: dt.date | str | None = None,
    drift_kind: str = "scanner",
) -> SynthSummary:
    """Write a synthetic multi-site head-CT data set under ``out``.

    Parameters
    ----------
    out
        Root folder (created; existing files with the same names are overwritten).
    studies, sites, seed
        Size and identity: the same seed gives the same UIDs and the same pixels, whatever
        ``workers`` is.
    positive_rate
        Fraction of studies with blood (exactly ``round(positive_rate * studies)``, unless
        ``population`` drift changes the drifted studies).
    matrix
        Rows = columns of the axial series (128, 256 or 512).
    reads_miss_rate
        Probability that the radiology read of a positive study says negative.
    fault_rate
        Fraction of studies replaced by bad inputs (``faults.csv`` says which and how).
    workers
        Processes; ``None`` = the CPUs available (one process for small jobs), 1 = in this
        process.
    progress
        Progress bar on stderr; ``None`` = only when stderr is a terminal.
    nights
        StudyDates are spread uniformly over this many consecutive days from
        :data:`.plan.FIRST_NIGHT` (2025-03-03); default about a dozen studies a night, at least 3.
    drift_site, drift_from, drift_kind
        Inject drift: from StudyDate ``drift_from`` (a date or ``YYYY-MM-DD``) on, the studies of
        ``drift_site`` come from a new scanner (``"scanner"``: other manufacturer, kernel,
        intercept, thinner slices), the same scanners with thin slices (``"thin-slices"``), or a
        sicker population (``"population"``: more positives, larger bleeds); see
        :mod:`.drift`. Recorded in ``DIR/drift.json``.
    """
    if matrix not in (64, 128, 256, 384, 512):
        raise ValueError(f"matrix must be one of 64, 128, 256, 384, 512, got {matrix}")
    t0 = time.perf_counter()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    if (drift_site is None) != (drift_from is None):
        raise ValueError("drift needs both drift_site and drift_from")
    spec = (DriftSpec(drift_site, parse_date(drift_from), drift_kind)
            if drift_site is not None and drift_from is not None else None)
    plans = plan_studies(studies=studies, sites=sites, seed=seed, positive_rate=positive_rate,
                         matrix=matrix, fault_rate=fault_rate, nights=nights)
    drift = None
    if spec is not None:
        plans, drift = apply_drift(plans, spec, seed=seed,
                                   site_scanners=site_profiles(sites, seed)[spec.site])
    n_workers = _default_workers(studies, matrix) if workers is None else max(1, int(workers))
    outcomes: list[StudyOutcome] = []
    jobs = [(pl, str(root)) for pl in plans]
    if n_workers == 1:
        with _progress(len(jobs), progress) as bar:
            for job in jobs:
                outcomes.append(_work(job))
                bar.update(1)
    else:
        with _single_threaded_children():
            pool = mp.get_context("spawn").Pool(n_workers)
        try:
            with _progress(len(jobs), progress) as bar:
                for res in pool.imap_unordered(_work, jobs, chunksize=1):
                    outcomes.append(res)
                    bar.update(1)
        finally:
            pool.close()
            pool.join()
    outcomes.sort(key=lambda o: o.index)
    paths = {"root": root, "labels": root / "labels.csv", "reads": root / "reads.csv",
             "masks": root / "masks"}
    _write_csv(paths["labels"], LABELS_HEADER, [o.label for o in outcomes])
    reads, read_counts = make_reads([o.truth for o in outcomes], seed=seed,
                                    miss_rate=reads_miss_rate)
    _write_csv(paths["reads"], READS_HEADER, [r.row() for r in reads])
    fault_rows = [r.row() for o in outcomes for r in o.faults]
    if fault_rate > 0:
        paths["faults"] = root / "faults.csv"
        _write_csv(paths["faults"], faults.FAULTS_HEADER, fault_rows)
    if drift is not None:
        paths["drift"] = root / "drift.json"
        paths["drift"].write_text(json.dumps(drift.to_json(), indent=2) + "\n")
    counts = {
        "studies": len(outcomes),
        "positives": sum(o.label[2] for o in outcomes),
        "negatives": sum(1 - o.label[2] for o in outcomes),
        "faults": len(fault_rows),
        "files": sum(o.files for o in outcomes),
        "series": 3 * len(outcomes),
        **{name: sum(name in o.truth.subtypes for o in outcomes) for name in SUBTYPE_NAMES},
        **read_counts,
        "drifted": len(drift.studies) if drift is not None else 0,
    }
    site_names = sorted({pl.site for pl in plans})
    return SynthSummary(counts=counts, sites=site_names, seconds=time.perf_counter() - t0,
                        paths=paths)
