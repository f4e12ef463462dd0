"""Shared set-up of the audit and drift tests: a fresh migrated database per test module, and
hand-built studies and findings written through the DB layer's own repository functions (the
same writes the screening pipeline makes), so no model or DICOM is needed."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import make_url

from bloodnet_ops.db import repo
from bloodnet_ops.db.session import make_engine, migrate
from bloodnet_ops.reasons import Reason, Verdict
from bloodnet_ops.records import HUStats, StudyResult, ValidationReport
from bloodnet_ops.services import create_database, drop_database

MODEL_VERSION = "bloodnet-test-1"
DAY0 = date(2026, 1, 1)
NIGHTS = 30
PER_NIGHT = 8
SHIFT_NIGHT = 22  #: a drifting site changes from this night on (inside the recent window)
WEIGHTS = "0" * 64
THRESHOLD = 0.5


def fresh_database(database_url: str, prefix: str) -> Iterator[str]:
    """A new migrated database on the server of ``database_url``, dropped afterwards (the session
    database is shared by every test module, and the audit reads all findings it holds)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = create_database(database_url, name)
    migrate(url)
    try:
        yield url
    finally:
        drop_database(database_url, make_url(url).database)


@dataclass
class StudySpec:
    """One hand-built study: what validation saw and (when accepted) what the model said."""

    uid: str
    site: str
    day: date
    probability: float | None = None  #: None: not scored
    volume_ml: float = 0.0
    accession: str = ""
    verdict: str = "accept"
    reasons: Sequence[str] = ()
    manufacturer: str = "ACME"
    model: str = "Scan-64"
    kernel: str = "H30s"
    slice_thickness: float = 5.0
    kvp: float = 120.0
    pixel_spacing: float = 0.45
    hu: dict[str, float] = field(default_factory=lambda: {
        "air_peak": -1000.0, "brain_median": 35.0, "p01": -1000.0, "p99": 1200.0,
        "min": -1024.0, "max": 2500.0, "mean": -400.0, "std": 600.0})

    def study_result(self) -> StudyResult:
        return StudyResult(
            study_uid=self.uid, series_uid=f"{self.uid}.1", site=self.site,
            verdict=Verdict(self.verdict), reasons=[Reason(r) for r in self.reasons], keys=[],
            series_keys=[], patient_id=f"P-{self.uid}", accession_number=self.accession,
            study_date=self.day.strftime("%Y%m%d"), manufacturer=self.manufacturer,
            manufacturer_model=self.model, kernel=self.kernel, kvp=self.kvp,
            slice_thickness=self.slice_thickness, pixel_spacing=self.pixel_spacing, n_slices=32,
            hu=HUStats(**self.hu) if self.verdict != "reject" else None,
        )


def write_studies(db_url: str, specs: Sequence[StudySpec], *, run_id: str = "run-1",
                  model_version: str = MODEL_VERSION) -> None:
    """Record validation (studies, series, verdicts, HU stats) and the findings of ``specs``."""
    engine = make_engine(db_url)
    try:
        repo.record_validation(
            engine, ValidationReport([s.study_result() for s in specs], [], []),
            source_uri="s3://test/ct", run_id=run_id,
        )
        repo.register_model_version(engine, model_version=model_version, weights_sha256=WEIGHTS,
                                    threshold=THRESHOLD, variant="bloodnet")
        repo.upsert_findings(engine, [
            repo.FindingRow(
                series_uid=f"{s.uid}.1", model_version=model_version, preprocessing_version="p1",
                study_uid=s.uid, site=s.site, patient_key="", probability=s.probability,
                positive=s.probability >= THRESHOLD, volume_ml=s.volume_ml,
                weights_sha256=WEIGHTS, run_id=run_id, seg_key=f"out/{s.uid}/seg.dcm",
                sr_key=f"out/{s.uid}/sr.dcm",
            )
            for s in specs if s.probability is not None
        ])
    finally:
        engine.dispose()


def site_specs(rng: random.Random, site: str, *, kernel_change: bool = False,
                score_shift: float = 0.0) -> list[StudySpec]:
    """30 nights of 8 studies: two scanners, a mix of kVp and FOVs, 15 % ICH, 5 % rejects."""
    specs = []
    for night in range(NIGHTS):
        drifted = night >= SHIFT_NIGHT
        for i in range(PER_NIGHT):
            ich = rng.random() < 0.15
            p = rng.gauss(0.8 if ich else 0.15, 0.12) + (score_shift if drifted else 0.0)
            reject = rng.random() < 0.05
            main = rng.random() < 0.7
            specs.append(StudySpec(
                uid=f"2.25.{sum(map(ord, site))}.{night}.{i}", site=site,
                day=DAY0 + timedelta(days=night),
                probability=None if reject else min(0.99, max(0.01, p)), volume_ml=0.0,
                accession=f"ACC-{site}-{night}-{i}",
                verdict="reject" if reject else "accept",
                reasons=("slice_gap",) if reject else (),
                manufacturer="ACME" if main else "Other",
                model="Scan-64" if main else "Q-16",
                kernel=("FC68" if kernel_change and drifted else ("H30s" if main else "FC21")),
                kvp=rng.choice([120.0, 120.0, 140.0]),
                pixel_spacing=rng.choice([0.43, 0.45, 0.49]),
                hu={"air_peak": rng.gauss(-1000, 5), "brain_median": rng.gauss(35, 2),
                    "p01": -1000.0, "p99": rng.gauss(1200, 50), "min": -1024.0, "max": 2500.0,
                    "mean": rng.gauss(-400, 20), "std": rng.gauss(600, 15)},
            ))
    return specs
