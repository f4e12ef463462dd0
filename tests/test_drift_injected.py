"""Proof on data (issue 5 item 6): drift that ``bloodnet synth`` injects into one site is caught by
the drift monitor, through the real pipeline, and the unchanged sites raise nothing.

synth (3 sites; site-b gets a new scanner from 2025-03-09) → ``pipeline.validate_source`` →
``repo.record_validation`` into PostgreSQL → ``drift.monitor.run_drift`` with the reference pinned
to the nights before the injection and the recent window = the nights from it on.

Why this size (the assertions are fixed; only the data size was tuned): the monitor compares a
window only with at least 20 reference and 10 recent studies (``Rule.min_reference`` /
``min_recent``), so every site needs about 40 studies for the stable sites to be compared at all
rather than passed as "insufficient data". Its chi-square also merges categories whose expected
count is under 5 into one column; the new scanner's category (only in the recent window) has an
expected count of ``n_recent**2 / n``, so the injected site needs about 15 recent studies or its
new kernel would be merged with the old ones and the test would see nothing. 120 studies over 10
nights at 64² (about 30 s of CPU) give every site 22-26 reference and 14-18 recent studies.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from analytics_helpers import fresh_database
from sqlalchemy import select
from typer.testing import CliRunner

from bloodnet_ops.db.models_audit import DriftAlert
from bloodnet_ops.db.repo import record_validation
from bloodnet_ops.db.session import make_engine, session_scope
from bloodnet_ops.drift.monitor import DriftReport, run_drift
from bloodnet_ops.drift.windows import WindowSpec
from bloodnet_ops.pipeline import validate_source
from bloodnet_ops.reasons import Verdict
from bloodnet_ops.records import ValidationReport
from bloodnet_ops.storage import LocalSource
from bloodnet_ops.synth import generate_dataset

DRIFT_SITE = "site-b"
STABLE = ("site-a", "site-c")
DRIFT_FROM = dt.date(2025, 3, 9)
#: Acquisition fields that a new scanner changes at every study (the monitor's feature names).
SCANNER_FIELDS = {"manufacturer", "model", "kernel", "slice_thickness"}


@dataclass
class Injected:
    root: Path
    record: dict
    validation: ValidationReport
    url: str
    spec: WindowSpec
    report: DriftReport


@pytest.fixture(scope="module")
def injected(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Injected]:
    root = tmp_path_factory.mktemp("drift_injected")
    summary = generate_dataset(root, studies=120, sites=3, seed=3, matrix=64, nights=10,
                               workers=1, drift_site=DRIFT_SITE, drift_from=DRIFT_FROM)
    record = json.loads(summary.paths["drift"].read_text())
    source = LocalSource(root)
    validation = validate_source(source)
    for url in fresh_database(database_url, "drift_injected"):
        engine = make_engine(url)
        try:
            record_validation(engine, validation, source_uri=source.uri, run_id="synth-drift")
        finally:
            engine.dispose()
        first, last = (dt.date.fromisoformat(record[k]) for k in ("first_night", "last_night"))
        spec = WindowSpec(reference_from=first, reference_to=DRIFT_FROM - dt.timedelta(days=1),
                          recent_nights=(last - DRIFT_FROM).days + 1)
        report = run_drift(url, reference=spec, run_key="synth-drift", webhook_url="")
        yield Injected(root, record, validation, url, spec, report)


def test_the_injection_is_recorded_and_every_study_is_accepted(injected: Injected) -> None:
    rec = injected.record
    assert (rec["site"], rec["start"], rec["kind"]) == (DRIFT_SITE, "2025-03-09", "scanner")
    assert (rec["first_night"], rec["last_night"]) == ("2025-03-03", "2025-03-12")
    studies = injected.validation.studies
    assert len(studies) == 120
    # A new scanner is valid input: the drift must show in the monitor, not as rejects.
    assert {s.verdict for s in studies} == {Verdict.ACCEPT}
    drifted = {s.study_uid for s in studies
               if s.site == DRIFT_SITE and s.study_date >= DRIFT_FROM.strftime("%Y%m%d")}
    assert drifted == set(rec["studies"]) and len(drifted) == rec["n_studies"]
    after = rec["after"]
    for s in studies:
        new = s.study_uid in drifted
        assert (s.manufacturer in after["manufacturers"]) == new or s.site != DRIFT_SITE
        assert (s.kernel in after["kernels"]) == new
        assert (s.slice_thickness in after["slice_thicknesses"]) == new


def test_every_site_is_compared_over_the_injection_windows(injected: Injected) -> None:
    report = injected.report
    assert set(report.sites) == {DRIFT_SITE, *STABLE} and not report.skipped_sites
    for rows in report.sites.values():
        w = rows[0].windows
        assert (w.reference_from, w.reference_to) == (dt.date(2025, 3, 3), dt.date(2025, 3, 8))
        # A site's windows end at its own last night (a site may send nothing on the last).
        assert DRIFT_FROM <= w.recent_from <= w.recent_to <= dt.date(2025, 3, 12)
        assert w.recent_to >= dt.date(2025, 3, 11)
        meta = [r for r in rows if r.family == "metadata"]
        # Real comparisons, not "insufficient data": enough studies in both windows.
        assert all(r.n_reference >= 20 and r.n_recent >= 10 and r.value is not None
                   for r in meta), [(r.metric, r.n_reference, r.n_recent, r.note) for r in meta]
        hu = [r for r in rows if r.family == "hu"]
        assert hu and all(r.value is not None for r in hu)


def test_the_injected_site_alerts_on_acquisition_metadata(injected: Injected) -> None:
    rows = injected.report.sites[DRIFT_SITE]
    alerted = {(r.feature, r.statistic) for r in rows
               if r.family == "metadata" and r.status == "alert"}
    assert {(f, s) for f in SCANNER_FIELDS for s in ("PSI", "chi2")} <= alerted
    for r in rows:
        if r.family == "metadata" and r.feature in SCANNER_FIELDS and r.statistic == "chi2":
            assert r.value == pytest.approx(1.0)  # Cramér's V: before and after are disjoint
            assert r.p_value is not None and r.p_value < 1e-6
    assert {a.site for a in injected.report.alerts} == {DRIFT_SITE}


def test_the_unchanged_sites_stay_ok(injected: Injected) -> None:
    for site in STABLE:
        not_ok = [(r.metric, r.statistic, r.value, r.p_value, r.status)
                  for r in injected.report.sites[site] if r.status != "ok"]
        assert not_ok == [], site
    engine = make_engine(injected.url)
    try:
        with session_scope(engine) as session:
            stored = session.execute(
                select(DriftAlert.site, DriftAlert.feature, DriftAlert.delivery)
                .where(DriftAlert.drift_run_id == injected.report.drift_run_id)
            ).all()
    finally:
        engine.dispose()
    assert stored and {s for s, _, _ in stored} == {DRIFT_SITE}
    assert {f for _, f, _ in stored} >= SCANNER_FIELDS
    assert {d for _, _, d in stored} == {"disabled"}


def test_the_drift_cli_reports_the_same(injected: Injected,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from bloodnet_ops.cli import app

    monkeypatch.delenv("BLOODNET_ALERT_WEBHOOK", raising=False)
    spec = injected.spec
    res = CliRunner().invoke(app, [
        "drift", "--db", injected.url, "--json",
        "--reference-from", spec.reference_from.isoformat(),
        "--reference-to", spec.reference_to.isoformat(),
        "--recent-nights", str(spec.recent_nights),
    ])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert {a["site"] for a in doc["alerts"]} == {DRIFT_SITE}
    assert {a["metric"] for a in doc["alerts"]} >= {f"metadata.{f}" for f in SCANNER_FIELDS}
    for site in STABLE:
        assert {m["status"] for m in doc["sites"][site]} == {"ok"}
