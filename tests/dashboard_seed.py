"""Realistic results-database content for the dashboard tests and the dashboard benchmark.

``plan_world`` draws a deterministic world (runs per night, studies per site with verdicts, reason
codes, failed expectations with observed values, HU statistics, model findings, radiology reads,
drift statistics). Two writers put it into a migrated database:

- :func:`seed_via_pipeline` (tests, small): the pipeline's own write path, i.e. the core repository
  (``record_validation``, ``upsert_findings``, runs, model versions), the audit's
  ``run_audit``/``adjudicate``, and the drift ORM tables; then each run is moved back to its night
  (the repository stamps ``now()``).
- :func:`seed_bulk` (benchmark, a year × 20 sites): the same world written with COPY into the ORM
  tables, because the repository's per-night transactions would take many minutes at that size.
  COPY fires the rollup triggers like any other insert, so the rollups fill as they would.

Nothing here is PHI: accession numbers, patient ids and reader names are invented, and the few
PHI-looking strings (an object key and a report with a patient name) exist so the tests can prove
that no page shows them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bloodnet_ops import PREPROCESSING_VERSION
from bloodnet_ops.reasons import Reason, Verdict, verdict_for
from bloodnet_ops.records import CheckResult, HUStats, UnreadableObject

#: A PHI-looking object key and report text: the pages must never show them.
PHI_KEY_MARKER = "DOE^JOHN"
PHI_REPORT = "Patient DOE^JOHN, born 1950-01-01: acute subdural haematoma."
#: An observed header value with markup: the pages must show it escaped, never execute it.
MARKUP_VALUE = "<script>window.__pwned = 1</script><img src=x onerror=alert(1)>"

REJECT_REASONS = (
    Reason.NOT_HEAD, Reason.TOO_FEW_SLICES, Reason.SLICE_GAP, Reason.MISSING_RESCALE,
    Reason.HU_OUT_OF_RANGE, Reason.INCONSISTENT_GEOMETRY, Reason.NOT_CT,
    Reason.NON_AXIAL_ORIENTATION,
)
WARN_REASONS = (Reason.CONTRAST_ENHANCED, Reason.GANTRY_TILT)

# The checks every study gets: (suite, expectation, column, reason it stands for).
CHECKS: tuple[tuple[str, str, str | None, Reason], ...] = (
    ("header", "expect_column_values_to_be_in_set", "modality", Reason.NOT_CT),
    ("header", "expect_column_values_to_match_regex", "body_part", Reason.NOT_HEAD),
    ("header", "expect_column_values_to_not_be_null", "rescale_slope", Reason.MISSING_RESCALE),
    ("series", "expect_table_row_count_to_be_between", None, Reason.TOO_FEW_SLICES),
    ("series", "expect_column_max_to_be_between", "slice_gap_mm", Reason.SLICE_GAP),
    ("hu", "expect_column_values_to_be_between", "air_peak", Reason.HU_OUT_OF_RANGE),
)
EXTRA_CHECKS: dict[Reason, tuple[str, str, str | None]] = {
    Reason.INCONSISTENT_GEOMETRY: (
        "series", "expect_column_unique_value_count_to_be_between", "rows"),
    Reason.NON_AXIAL_ORIENTATION: ("series", "expect_column_values_to_be_between", "axial_cosine"),
    Reason.CONTRAST_ENHANCED: ("header", "expect_column_values_to_be_null", "contrast_agent"),
    Reason.GANTRY_TILT: ("header", "expect_column_values_to_be_between", "gantry_tilt"),
}
DRIFT_FEATURES = (
    ("hu", "brain_median", "KS", 0.15, 0.25),
    ("score", "probability", "PSI", 0.1, 0.25),
    ("reject_rate", "reject", "two_prop", 2.0, 3.0),
)


@dataclass(frozen=True)
class SeedSpec:
    sites: tuple[str, ...] = ("site-a", "site-b", "site-c")
    nights: int = 14
    studies_per_site_night: int = 6
    end: dt.date = dt.date(2026, 3, 14)
    seed: int = 7
    audit_every: int = 7  #: nights between audit runs
    drift_nights: int = 10  #: the last N nights each get a drift run
    unreadable_every: int = 3  #: every Nth night has one unreadable object per site

    @property
    def start(self) -> dt.date:
        return self.end - dt.timedelta(days=self.nights - 1)


@dataclass
class StudyPlan:
    study_uid: str
    series_uid: str
    site: str
    night: dt.date
    accession: str
    patient: str
    verdict: Verdict
    reasons: list[Reason]
    checks: list[CheckResult]
    hu: HUStats | None
    truth_ich: bool
    probability: float | None  #: None for a rejected study
    volume_ml: float
    load_seconds: float
    infer_seconds: float
    read_ich: bool


@dataclass
class RunPlan:
    run_id: str
    night: dt.date
    model_version: str
    status: str
    studies: list[StudyPlan]
    unreadable: list[UnreadableObject]

    @property
    def started_at(self) -> dt.datetime:
        return dt.datetime.combine(self.night, dt.time(1, 0), tzinfo=dt.UTC)

    @property
    def finished_at(self) -> dt.datetime:
        return self.started_at + dt.timedelta(minutes=20 + len(self.studies) // 10)


@dataclass
class ModelPlan:
    model_version: str
    variant: str
    threshold: float
    weights_sha256: str
    metrics: dict[str, Any]


@dataclass
class DriftPoint:
    night: dt.date
    site: str
    family: str
    feature: str
    statistic: str
    value: float
    warn: float
    alert: float

    @property
    def status(self) -> str:
        return "alert" if self.value >= self.alert else "warn" if self.value >= self.warn else "ok"


@dataclass
class World:
    spec: SeedSpec
    models: list[ModelPlan]
    runs: list[RunPlan]
    drift: list[DriftPoint]
    audit_windows: list[tuple[dt.date, dt.date]] = field(default_factory=list)

    def studies(self) -> Iterable[StudyPlan]:
        for run in self.runs:
            yield from run.studies


def _uid(rng: random.Random) -> str:
    # 2.25 UIDs (ISO/IEC 9834-8 UUID as an integer): valid, unique, and carry no meaning.
    return f"2.25.{uuid.UUID(int=rng.getrandbits(128), version=4).int}"


def _observed(reason: Reason, rng: random.Random, markup: bool) -> Any:
    if reason == Reason.NOT_HEAD:
        return {"unexpected_values": [MARKUP_VALUE if markup else "CHEST"]}
    if reason == Reason.NOT_CT:
        return {"unexpected_values": ["MR"]}
    if reason == Reason.MISSING_RESCALE:
        return {"unexpected_count": rng.randint(20, 60)}
    if reason == Reason.TOO_FEW_SLICES:
        return {"observed_value": rng.randint(3, 15)}
    if reason == Reason.SLICE_GAP:
        return {"observed_value": round(rng.uniform(7.5, 15.0), 2)}
    if reason == Reason.HU_OUT_OF_RANGE:
        return {"observed_value": round(rng.uniform(-800, -600), 1)}
    if reason == Reason.INCONSISTENT_GEOMETRY:
        return {"observed_value": 2, "values": [512, 256]}
    if reason == Reason.NON_AXIAL_ORIENTATION:
        return {"observed_value": round(rng.uniform(0.1, 0.7), 3)}
    if reason == Reason.CONTRAST_ENHANCED:
        return {"unexpected_values": ["IOHEXOL 350"]}
    return {"observed_value": round(rng.uniform(8, 25), 1)}  # gantry tilt, degrees


def _checks(reasons: list[Reason], rng: random.Random, markup: bool) -> list[CheckResult]:
    out = []
    for suite, expectation, column, stands_for in CHECKS:
        failed = stands_for in reasons
        out.append(CheckResult(
            suite, expectation, column, success=not failed,
            observed=_observed(stands_for, rng, markup) if failed else {"unexpected_count": 0},
            reason=stands_for if failed else None,
        ))
    for reason in reasons:
        if reason in EXTRA_CHECKS:
            suite, expectation, column = EXTRA_CHECKS[reason]
            out.append(CheckResult(suite, expectation, column, success=False,
                                   observed=_observed(reason, rng, markup), reason=reason))
    return out


def _hu(site_index: int, rng: random.Random, drifting: bool) -> HUStats:
    # Vendor offsets per site; a drifting site's brain median creeps up (a recalibration).
    brain = 34.0 + 1.5 * (site_index % 3) + rng.gauss(0, 1.5) + (6.0 if drifting else 0.0)
    air = -1000.0 + rng.gauss(0, 4) + (site_index % 4)
    return HUStats(air_peak=air, brain_median=brain, p01=air + rng.uniform(0, 10),
                   p99=rng.uniform(900, 1800), min=-1024.0, max=rng.uniform(2000, 3071),
                   mean=rng.uniform(-450, -350), std=rng.uniform(480, 560))


def _study(
    rng: random.Random, site: str, site_index: int, night: dt.date, n: int, *,
    drifting: bool, markup: bool,
) -> StudyPlan:
    draw = rng.random()
    reject_p = 0.07 + (0.10 if drifting else 0.0)
    if markup:
        reasons = [Reason.NOT_HEAD]
    elif draw < reject_p:
        reasons = [rng.choice(REJECT_REASONS)]
        if rng.random() < 0.15:
            reasons.append(rng.choice([r for r in REJECT_REASONS if r != reasons[0]]))
    elif draw < reject_p + 0.06:
        reasons = [rng.choice(WARN_REASONS)]
    else:
        reasons = []
    verdict = verdict_for(reasons)
    truth = rng.random() < 0.2
    probability = None
    if verdict != Verdict.REJECT:
        centre = 0.82 if truth else 0.12
        probability = min(0.999, max(0.001, rng.gauss(centre, 0.14)))
    volume = round(rng.uniform(0.5, 45.0), 2) if truth else round(rng.uniform(0.0, 0.4), 2)
    return StudyPlan(
        study_uid=_uid(rng),
        series_uid=_uid(rng),
        site=site,
        night=night,
        accession=f"ACC{night:%Y%m%d}{site_index:02d}{n:03d}",
        patient=f"PID{rng.randint(10**6, 10**7 - 1)}",
        verdict=verdict,
        reasons=reasons,
        checks=_checks(reasons, rng, markup),
        hu=None if verdict == Verdict.REJECT else _hu(site_index, rng, drifting),
        truth_ich=truth,
        probability=probability,
        volume_ml=volume if probability is not None and probability >= 0.5 else 0.0,
        load_seconds=round(rng.uniform(1.2, 3.8), 3),
        infer_seconds=round(rng.uniform(0.25, 0.9), 3),
        read_ich=truth if rng.random() > 0.05 else not truth,
    )


def plan_world(spec: SeedSpec) -> World:
    """Draw the whole world deterministically from ``spec.seed``."""
    rng = random.Random(spec.seed)
    models = [
        ModelPlan("bloodnet-2026.01", "bloodnet", 0.5, "a1" * 32,
                  {"auc": 0.951, "auc_ci": [0.932, 0.968], "sensitivity": 0.912,
                   "specificity": 0.903, "trained_on": "synthetic"}),
        ModelPlan("bloodnet-2026.02", "bloodnet", 0.45, "b2" * 32,
                  {"auc": 0.957, "auc_ci": [0.940, 0.972], "sensitivity": 0.925,
                   "specificity": 0.899, "trained_on": "synthetic"}),
    ]
    switch = spec.start + dt.timedelta(days=spec.nights // 2)
    drifting_site = spec.sites[-1]
    drift_from = spec.end - dt.timedelta(days=max(2, spec.drift_nights // 3) - 1)
    runs = []
    markup_done = False
    for i in range(spec.nights):
        night = spec.start + dt.timedelta(days=i)
        studies = []
        for s_index, site in enumerate(spec.sites):
            n_here = max(1, spec.studies_per_site_night + rng.randint(-2, 2))
            for n in range(n_here):
                markup = not markup_done and i == spec.nights - 2 and s_index == 0
                markup_done = markup_done or markup
                studies.append(_study(
                    rng, site, s_index, night, n,
                    drifting=site == drifting_site and night >= drift_from, markup=markup,
                ))
        unreadable = []
        if spec.unreadable_every and i % spec.unreadable_every == 0:
            for site in spec.sites:
                key = f"incoming/{site}/{night:%Y%m%d}/{PHI_KEY_MARKER}_{rng.randint(0, 9999)}.bin"
                unreadable.append(UnreadableObject(key, uuid.UUID(int=rng.getrandbits(128)).hex,
                                                   rng.randint(0, 4096), Reason.UNREADABLE,
                                                   f"not DICOM: {key}"))
        status = "failed" if i == spec.nights // 3 else "success"
        model = models[0] if night < switch else models[1]
        runs.append(RunPlan(f"nightly-{night.isoformat()}", night, model.model_version, status,
                            studies, unreadable))
    drift = []
    for i in range(spec.drift_nights):
        night = spec.end - dt.timedelta(days=spec.drift_nights - 1 - i)
        for site in spec.sites:
            for family, feature, statistic, warn, alert in DRIFT_FEATURES:
                base = rng.uniform(0.02, 0.6 * warn)
                if site == drifting_site and night >= drift_from:
                    base = alert * rng.uniform(1.1, 1.6)
                drift.append(DriftPoint(night, site, family, feature, statistic, round(base, 4),
                                        warn, alert))
    windows = []
    end = spec.end
    while end - dt.timedelta(days=spec.audit_every - 1) >= spec.start:
        windows.append((end - dt.timedelta(days=spec.audit_every - 1), end))
        end -= dt.timedelta(days=spec.audit_every)
    return World(spec, models, runs, drift, sorted(windows))


# ------------------------------------------------------------------ pipeline writer (tests)
def _study_result(p: StudyPlan):
    from bloodnet_ops.records import StudyResult

    return StudyResult(
        study_uid=p.study_uid, series_uid=p.series_uid, site=p.site, verdict=p.verdict,
        reasons=list(p.reasons), keys=[f"{p.study_uid}/{p.series_uid}/{k}.dcm" for k in range(3)],
        series_keys=[f"{p.study_uid}/{p.series_uid}/{k}.dcm" for k in range(3)],
        patient_id=p.patient, accession_number=p.accession, study_date=f"{p.night:%Y%m%d}",
        manufacturer="SIEMENS", manufacturer_model="SOMATOM", kernel="H30s", kvp=120.0,
        slice_thickness=5.0, pixel_spacing=0.45, n_slices=32, checks=p.checks, hu=p.hu,
    )


def _reads_csv(world: World, path: Path) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_uid", "accession_number", "site", "read_date", "reader", "ich",
                    "subtypes", "report"])
        for p in world.studies():
            if p.probability is None:
                continue
            w.writerow([p.study_uid, p.accession, p.site,
                        (p.night + dt.timedelta(days=1)).isoformat(), "Dr Reader",
                        int(p.read_ich), "SDH" if p.read_ich else "", PHI_REPORT])
    return path


def seed_via_pipeline(url: str, world: World, workdir: Path) -> None:
    """Write ``world`` through the pipeline's own repository and audit functions."""
    from sqlalchemy import text

    from bloodnet_ops.audit.adjudicate import adjudicate
    from bloodnet_ops.audit.run import run_audit
    from bloodnet_ops.db import repo
    from bloodnet_ops.db.session import make_engine
    from bloodnet_ops.records import StudyFinding, ValidationReport

    engine = make_engine(url)
    try:
        for m in world.models:
            repo.register_model_version(
                engine, model_version=m.model_version, weights_sha256=m.weights_sha256,
                threshold=m.threshold, variant=m.variant, metrics=m.metrics)
        for run in world.runs:
            source = f"s3://bloodnet-incoming/{run.night.isoformat()}"
            repo.start_inference_run(engine, run_id=run.run_id, source_uri=source,
                                     model_version=run.model_version)
            results = {p.study_uid: _study_result(p) for p in run.studies}
            report = ValidationReport(studies=list(results.values()),
                                      unreadable=list(run.unreadable), objects=[])
            repo.record_validation(engine, report, source_uri=source, run_id=run.run_id)
            model = next(m for m in world.models if m.model_version == run.model_version)
            rows = []
            for p in run.studies:
                if p.probability is None:
                    continue
                finding = StudyFinding(
                    study_uid=p.study_uid, series_uid=p.series_uid, probability=p.probability,
                    positive=p.probability >= model.threshold, volume_ml=p.volume_ml,
                    subtypes={"SDH": p.probability} if p.truth_ich else {}, n_slices=32,
                    load_seconds=p.load_seconds, infer_seconds=p.infer_seconds)
                rows.append(repo.FindingRow.from_finding(
                    finding, results[p.study_uid], model_version=model.model_version,
                    weights_sha256=model.weights_sha256, run_id=run.run_id))
            repo.upsert_findings(engine, rows)
            repo.finish_inference_run(engine, run_id=run.run_id, status=run.status,
                                      counts={"studies": len(run.studies)})
            _backdate_run(engine, run)
        reads = _reads_csv(world, workdir / "reads.csv")
        for k, (start, end) in enumerate(world.audit_windows):
            # A generous re-read sample, so the worklist spans several pages in the tests.
            run_audit(url, reads=reads if k == 0 else None, date_from=start, date_to=end,
                      run_key=f"audit-{end.isoformat()}", seed=k, reread_rate=0.3,
                      reread_min=4)
            with engine.begin() as conn:
                conn.execute(
                    text("UPDATE audit_runs SET started_at = :t, finished_at = :t"
                         " WHERE run_key = :k"),
                    {"t": dt.datetime.combine(end + dt.timedelta(days=1), dt.time(6),
                                              tzinfo=dt.UTC),
                     "k": f"audit-{end.isoformat()}"})
        with engine.connect() as conn:
            items = conn.execute(text(
                "SELECT study_uid, kind FROM audit_items ORDER BY id LIMIT 6")).all()
        outcomes = ("confirmed_miss", "false_positive", "true_negative")
        for n, (study_uid, kind) in enumerate(items):
            adjudicate(url, study_uid, kind=kind, outcome=outcomes[n % 3], reviewer="Reviewer 1")
        with engine.begin() as conn:
            _write_drift_orm(conn, world)
    finally:
        engine.dispose()


def _backdate_run(engine, run: RunPlan) -> None:
    """The repository stamps ``now()``; move the run and everything it wrote to its night."""
    from sqlalchemy import text

    start, end = run.started_at, run.finished_at
    with engine.begin() as conn:
        conn.execute(text("UPDATE inference_runs SET started_at = :s, finished_at = :e"
                          " WHERE run_id = :r"), {"s": start, "e": end, "r": run.run_id})
        for table, column in (("validation_results", "validated_at"), ("findings", "created_at"),
                              ("quarantine", "created_at"), ("hu_stats", "created_at"),
                              ("expectation_results", "created_at")):
            conn.execute(text(f"UPDATE {table} SET {column} = :t WHERE run_id = :r"),
                         {"t": start + dt.timedelta(minutes=5), "r": run.run_id})


def _write_drift_orm(conn, world: World) -> None:
    from sqlalchemy import insert

    from bloodnet_ops.db.models_audit import DriftAlert, DriftMetric, DriftRun

    by_night: dict[dt.date, list[DriftPoint]] = {}
    for p in world.drift:
        by_night.setdefault(p.night, []).append(p)
    for night, points in sorted(by_night.items()):
        at = dt.datetime.combine(night, dt.time(5), tzinfo=dt.UTC)
        run_id = conn.execute(insert(DriftRun).values(
            run_key=f"drift-{night.isoformat()}", started_at=at, finished_at=at,
            params={"window_nights": 7}, counts={"metrics": len(points)},
        ).returning(DriftRun.id)).scalar_one()
        for p in points:
            metric_id = conn.execute(insert(DriftMetric).values(
                drift_run_id=run_id, site=p.site, family=p.family, feature=p.feature,
                statistic=p.statistic, value=p.value, p_value=None, threshold_warn=p.warn,
                threshold_alert=p.alert, status=p.status, n_reference=140, n_recent=42,
                reference_from=night - dt.timedelta(days=27),
                reference_to=night - dt.timedelta(days=7),
                recent_from=night - dt.timedelta(days=6), recent_to=night, created_at=at,
            ).returning(DriftMetric.id)).scalar_one()
            if p.status == "alert":
                conn.execute(insert(DriftAlert).values(
                    drift_run_id=run_id, drift_metric_id=metric_id, site=p.site,
                    family=p.family, feature=p.feature, statistic=p.statistic, value=p.value,
                    threshold=p.alert, delivery="disabled", created_at=at))


# ------------------------------------------------------------------ bulk writer (benchmark)
def _pg_array(values: Sequence[str]) -> str:
    return "{" + ",".join('"' + v.replace('"', '\\"') + '"' for v in values) + "}"


def _copy(cur, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    buf = io.StringIO()
    w = csv.writer(buf)
    n = 0
    for row in rows:
        w.writerow(["\\N" if v is None else v for v in row])
        n += 1
    buf.seek(0)
    cur.copy_expert(
        f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buf)
    return n


def seed_bulk(url: str, world: World) -> dict[str, int]:
    """Write ``world`` with COPY (for a year of 20 sites). Returns rows per table."""
    from bloodnet_ops.db.session import make_engine
    from bloodnet_ops.pseudonym import pseudonymise

    engine = make_engine(url)
    counts: dict[str, int] = {}
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        counts["model_versions"] = _copy(
            cur, "model_versions",
            ("model_version", "weights_sha256", "threshold", "variant", "metrics"),
            ((m.model_version, m.weights_sha256, m.threshold, m.variant, json.dumps(m.metrics))
             for m in world.models))
        counts["sites"] = _copy(cur, "sites", ("site",), ((s,) for s in world.spec.sites))
        counts["inference_runs"] = _copy(
            cur, "inference_runs",
            ("run_id", "source_uri", "model_version", "status", "started_at", "finished_at",
             "counts"),
            ((r.run_id, f"s3://bloodnet-incoming/{r.night}", r.model_version, r.status,
              r.started_at.isoformat(), r.finished_at.isoformat(),
              json.dumps({"studies": len(r.studies)})) for r in world.runs))
        studies = list(world.studies())
        run_of = {p.study_uid: r for r in world.runs for p in r.studies}
        counts["studies"] = _copy(
            cur, "studies", ("study_uid", "site", "patient_key", "accession_key", "study_date"),
            ((p.study_uid, p.site, pseudonymise(p.patient), pseudonymise(p.accession),
              p.night.isoformat()) for p in studies))
        counts["validation_results"] = _copy(
            cur, "validation_results",
            ("study_uid", "run_id", "source_uri", "series_uid", "site", "verdict", "reasons",
             "n_slices", "validated_at"),
            ((p.study_uid, run_of[p.study_uid].run_id, "s3://bloodnet-incoming", p.series_uid,
              p.site, p.verdict.value, _pg_array([r.value for r in p.reasons]), 32,
              run_of[p.study_uid].started_at.isoformat()) for p in studies))
        cur.execute("SELECT study_uid, id FROM validation_results")
        vid = dict(cur.fetchall())
        counts["expectation_results"] = _copy(
            cur, "expectation_results",
            ("validation_id", "study_uid", "run_id", "site", "ordinal", "suite", "expectation",
             "column_name", "success", "observed", "reason", "created_at"),
            ((vid[p.study_uid], p.study_uid, run_of[p.study_uid].run_id, p.site, i, c.suite,
              c.expectation, c.column, c.success, json.dumps(c.observed),
              c.reason.value if c.reason else None, run_of[p.study_uid].started_at.isoformat())
             for p in studies for i, c in enumerate(p.checks)))
        counts["quarantine"] = _copy(
            cur, "quarantine",
            ("run_id", "source_uri", "kind", "ref", "study_uid", "object_key", "site", "reason",
             "reasons", "detail", "created_at"),
            [(run_of[p.study_uid].run_id, "s3://bloodnet-incoming", "study", p.study_uid,
              p.study_uid, None, p.site, p.reasons[0].value,
              _pg_array([r.value for r in p.reasons]), "",
              run_of[p.study_uid].started_at.isoformat())
             for p in studies if p.verdict == Verdict.REJECT]
            + [(r.run_id, "s3://bloodnet-incoming", "object", u.key, None, u.key, None,
                u.reason.value, _pg_array([u.reason.value]), u.detail, r.started_at.isoformat())
               for r in world.runs for u in r.unreadable])
        counts["hu_stats"] = _copy(
            cur, "hu_stats",
            ("study_uid", "run_id", "site", "series_uid", "air_peak", "brain_median", "p01",
             "p99", "min", "max", "mean", "std", "created_at"),
            ((p.study_uid, run_of[p.study_uid].run_id, p.site, p.series_uid, p.hu.air_peak,
              p.hu.brain_median, p.hu.p01, p.hu.p99, p.hu.min, p.hu.max, p.hu.mean, p.hu.std,
              run_of[p.study_uid].started_at.isoformat()) for p in studies if p.hu is not None))
        threshold = {m.model_version: m for m in world.models}
        counts["findings"] = _copy(
            cur, "findings",
            ("series_uid", "model_version", "preprocessing_version", "study_uid", "site",
             "patient_key", "probability", "positive", "volume_ml", "weights_sha256", "run_id",
             "load_seconds", "infer_seconds", "created_at", "updated_at"),
            ((p.series_uid, run_of[p.study_uid].model_version, PREPROCESSING_VERSION,
              p.study_uid, p.site, pseudonymise(p.patient), p.probability,
              p.probability >= threshold[run_of[p.study_uid].model_version].threshold,
              p.volume_ml, threshold[run_of[p.study_uid].model_version].weights_sha256,
              run_of[p.study_uid].run_id, p.load_seconds, p.infer_seconds,
              run_of[p.study_uid].started_at.isoformat(),
              run_of[p.study_uid].started_at.isoformat())
             for p in studies if p.probability is not None))
        counts["radiology_reads"] = _copy(
            cur, "radiology_reads",
            ("read_key", "accession_key", "study_uid", "matched_study_uid", "site", "read_date",
             "ich", "source", "row_number", "status", "matched"),
            (("uid:" + p.study_uid, pseudonymise(p.accession), p.study_uid, p.study_uid, p.site,
              (p.night + dt.timedelta(days=1)).isoformat(), p.read_ich, "reads.csv", n + 1,
              "matched", True) for n, p in enumerate(studies) if p.probability is not None))
        counts.update(_bulk_audit(cur, world))
        raw.commit()
    finally:
        raw.close()
    raw = engine.raw_connection()
    try:
        counts.update(_bulk_drift(raw.cursor(), world))
        raw.commit()
        raw.driver_connection.autocommit = True  # VACUUM refuses to run in a transaction
        cur = raw.driver_connection.cursor()
        cur.execute("VACUUM ANALYZE")
        for table in ROLLUP_TABLES:  # filled by the triggers as COPY wrote the tables above
            cur.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cur.fetchone()[0]
    finally:
        raw.close()
    engine.dispose()
    return counts


#: The per-run rollups (migration 0003), reported with the seeded row counts.
ROLLUP_TABLES = ("rollup_validation", "rollup_findings", "rollup_run_seconds", "rollup_hu",
                 "rollup_failed_expectations", "rollup_quarantine")


def _bulk_drift(cur, world: World) -> dict[str, int]:
    """One drift run per night, its metrics by COPY, and an alert for each metric over its limit."""
    nights = sorted({p.night for p in world.drift})
    _copy(cur, "drift_runs", ("run_key", "started_at", "finished_at", "params"),
          ((f"drift-{n}", f"{n}T05:00:00+00:00", f"{n}T05:00:00+00:00",
            json.dumps({"window_nights": 7})) for n in nights))
    cur.execute("SELECT run_key, id FROM drift_runs")
    run_ids = dict(cur.fetchall())
    n = _copy(
        cur, "drift_metrics",
        ("drift_run_id", "site", "family", "feature", "statistic", "value", "threshold_warn",
         "threshold_alert", "status", "n_reference", "n_recent", "reference_from",
         "reference_to", "recent_from", "recent_to", "created_at"),
        ((run_ids[f"drift-{p.night}"], p.site, p.family, p.feature, p.statistic, p.value, p.warn,
          p.alert, p.status, 140, 42, p.night - dt.timedelta(days=27),
          p.night - dt.timedelta(days=7), p.night - dt.timedelta(days=6), p.night,
          f"{p.night}T05:00:00+00:00") for p in world.drift))
    cur.execute(
        "INSERT INTO drift_alerts (drift_run_id, drift_metric_id, site, family, feature,"
        " statistic, value, threshold, delivery, created_at)"
        " SELECT drift_run_id, id, site, family, feature, statistic, value, threshold_alert,"
        " 'disabled', created_at FROM drift_metrics WHERE status = 'alert'")
    return {"drift_runs": len(nights), "drift_metrics": n, "drift_alerts": cur.rowcount}


def _bulk_audit(cur, world: World) -> dict[str, int]:
    """Weekly audit runs: worklist items and per-site figures with Wilson-like CIs."""
    rng = random.Random(world.spec.seed + 1)
    by_night: dict[dt.date, list[StudyPlan]] = {}
    for p in world.studies():
        if p.probability is not None:
            by_night.setdefault(p.night, []).append(p)
    items = metrics = 0
    for k, (start, end) in enumerate(world.audit_windows):
        at = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(6), tzinfo=dt.UTC)
        cur.execute(
            "INSERT INTO audit_runs (run_key, started_at, finished_at, date_from, date_to,"
            " model_version) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (f"audit-{end}", at, at, start, end, world.runs[-1].model_version))
        run_id = cur.fetchone()[0]
        cases = [p for d in range((end - start).days + 1)
                 for p in by_night.get(start + dt.timedelta(days=d), [])]
        item_rows, metric_rows = [], []
        for site in world.spec.sites:
            site_cases = [p for p in cases if p.site == site]
            mbm = [p for p in site_cases if p.read_ich and p.probability < 0.5]
            mbr = [p for p in site_cases if not p.read_ich and p.probability >= 0.5]
            negatives = [p for p in site_cases if p.probability < 0.5 and not p.read_ich]
            sample = rng.sample(negatives, min(len(negatives), 5))
            for kind, group in (("missed_by_model", mbm), ("missed_by_reader", mbr),
                                ("reread_sample", sample)):
                for rank, p in enumerate(sorted(group, key=lambda p: -p.probability), start=1):
                    item_rows.append((run_id, p.study_uid, site, kind, p.probability,
                                      p.volume_ml, rank, p.read_ich, world.runs[-1].model_version,
                                      p.series_uid))
            tp = sum(p.read_ich and p.probability >= 0.5 for p in site_cases)
            fn = sum(p.read_ich and p.probability < 0.5 for p in site_cases)
            tn = sum(not p.read_ich and p.probability < 0.5 for p in site_cases)
            fp = sum(not p.read_ich and p.probability >= 0.5 for p in site_cases)
            for metric, k_, n_ in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp)):
                value = k_ / n_ if n_ else None
                lo, hi = _wilson(k_, n_)
                metric_rows.append((run_id, site, metric, value, lo, hi, n_, "wilson"))
            auc = min(0.999, 0.93 + rng.gauss(0, 0.02))
            metric_rows.append((run_id, site, "auc", auc, auc - 0.04, min(1.0, auc + 0.03),
                                len(site_cases), "delong"))
        items += _copy(cur, "audit_items",
                       ("audit_run_id", "study_uid", "site", "kind", "probability", "volume_ml",
                        "rank", "read_ich", "model_version", "series_uid"), item_rows)
        metrics += _copy(cur, "audit_metrics",
                         ("audit_run_id", "site", "metric", "value", "ci_lo", "ci_hi", "n",
                          "method"), metric_rows)
    return {"audit_runs": len(world.audit_windows), "audit_items": items,
            "audit_metrics": metrics}


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    if n == 0:
        return None, None
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / den
    return max(0.0, centre - half), min(1.0, centre + half)
