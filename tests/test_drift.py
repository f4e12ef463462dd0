"""Drift monitoring: the statistics on known inputs, the windows, and the monitor on a real
PostgreSQL database filled with many nights of several stable sites plus one that drifts."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from analytics_helpers import (
    DAY0,
    MODEL_VERSION,
    PER_NIGHT,
    SHIFT_NIGHT,
    StudySpec,
    fresh_database,
    site_specs,
    write_studies,
)
from sqlalchemy import text

from bloodnet_ops.audit.summary import summary_lines
from bloodnet_ops.db.session import make_engine
from bloodnet_ops.drift import stats
from bloodnet_ops.drift.monitor import Rule, Thresholds, run_drift
from bloodnet_ops.drift.windows import WindowSpec, choose_windows

STABLE = ("site-a", "site-b", "site-c")


# ---------------------------------------------------------------------------------------------
# statistics


def test_psi_is_zero_for_the_same_sample_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 2000)
    same = stats.psi(ref, ref)
    assert same.value == pytest.approx(0.0, abs=1e-12) and same.p_value == pytest.approx(1.0)
    shifted = stats.psi(ref, rng.normal(1.0, 1, 500))
    assert shifted.value > 0.25 and shifted.p_value < 1e-6
    assert (shifted.n_reference, shifted.n_recent) == (2000, 500)


def test_psi_matches_a_hand_computation_on_two_bins() -> None:
    # 40 reference values, 20 recent: 2 bins split at the reference median (value 0 | value 1).
    ref = [0.0] * 20 + [1.0] * 20
    cur = [0.0] * 5 + [1.0] * 15
    p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    expected = float(np.sum((q - p) * np.log(q / p)))
    assert stats.psi(ref, cur).value == pytest.approx(expected)


def test_psi_bins_shrink_with_small_samples_so_noise_stays_small() -> None:
    rng = np.random.default_rng(1)
    values = [stats.psi(rng.normal(size=30), rng.normal(size=12)).value for _ in range(200)]
    # With ten bins the null PSI of 30 vs 12 values averages about 0.9; two bins keep it small.
    assert float(np.mean(values)) < 0.15


def test_categorical_psi_and_chi2_see_a_new_kernel() -> None:
    ref = ["H30s"] * 90 + ["H31s"] * 10
    cur = ["FC68"] * 40
    psi = stats.psi_categorical(ref, cur)
    chi = stats.chi2_categorical(ref, cur)
    assert psi.value > 5 and psi.p_value < 1e-10
    assert chi.value == pytest.approx(1.0) and chi.p_value < 1e-10  # disjoint → Cramér's V = 1
    stable = stats.chi2_categorical(ref, ["H30s"] * 36 + ["H31s"] * 4)
    assert stable.value == pytest.approx(0.0, abs=1e-9) and stable.p_value > 0.5


def test_ks_returns_d_and_p_like_scipy() -> None:
    from scipy.stats import ks_2samp

    a, b = [0.1, 0.2, 0.3, 0.4, 0.5], [0.35, 0.45, 0.55, 0.65]
    got = stats.ks(a, b + [None])  # missing values are ignored
    want = ks_2samp(a, b)
    assert got.value == pytest.approx(want.statistic) and got.p_value == pytest.approx(want.pvalue)


def test_two_proportion_uses_z_for_large_and_fisher_for_small_counts() -> None:
    from scipy.stats import fisher_exact, norm

    big = stats.two_proportion(50, 500, 80, 500)
    pool = 130 / 1000
    z = (0.16 - 0.10) / math.sqrt(pool * (1 - pool) * (2 / 500))
    assert big.value == pytest.approx(0.06) and big.p_value == pytest.approx(2 * norm.sf(z))
    small = stats.two_proportion(0, 40, 3, 12)  # expected count of events < 5
    assert small.value == pytest.approx(0.25)
    assert small.p_value == pytest.approx(fisher_exact([[0, 40], [3, 9]]).pvalue)


def test_cusum_is_quiet_at_the_reference_rate_and_fires_on_a_sustained_rise() -> None:
    quiet = stats.cusum([(1, 8), (2, 8), (1, 8), (1, 8), (0, 8), (2, 8), (1, 8)], 0.15,
                        n_reference=120)
    assert quiet.value < 2 and quiet.p_value > 0.2
    loud = stats.cusum([(4, 8), (5, 8), (4, 8), (5, 8), (4, 8), (6, 8), (5, 8)], 0.15,
                       n_reference=120)
    assert loud.value > 8 and loud.p_value < 0.001
    again = stats.cusum([(4, 8), (5, 8), (4, 8), (5, 8), (4, 8), (6, 8), (5, 8)], 0.15,
                        n_reference=120)
    assert again == loud  # a fixed seed: reruns store the same numbers


@pytest.mark.parametrize(
    ("value", "p", "m", "status"),
    [
        (0.30, 1e-6, 1, "alert"),
        (0.30, 1e-6, 100, "alert"),
        (0.30, 5e-5, 100, "warn"),  # 5e-5 ≥ 0.001/100 but < 0.01/100
        (0.30, 0.02, 1, "ok"),  # big but not significant: no page
        (0.12, 1e-9, 1, "warn"),
        (0.05, 1e-9, 1, "ok"),  # significant but tiny
    ],
)
def test_rule_needs_both_effect_size_and_a_family_wise_p_value(value, p, m, status) -> None:
    rule = Rule(warn=0.1, alert=0.25)
    assert rule.status(stats.Stat(value, p, 100, 100), m=m) == status


def test_windows_first_nights_and_last_nights_without_overlap() -> None:
    nights = [DAY0 + timedelta(days=i) for i in range(10)]
    w = choose_windows(nights + nights[:3], WindowSpec(reference_nights=4, recent_nights=3))
    assert w.reference == tuple(nights[:4]) and w.recent == tuple(nights[7:])
    assert w.which(nights[5]) is None and w.which(nights[8]) == "recent"
    short = choose_windows(nights[:5], WindowSpec(reference_nights=4, recent_nights=3))
    assert short.recent == (nights[4],)  # what is left after the reference
    assert choose_windows(nights[:4], WindowSpec(reference_nights=4, recent_nights=3)) is None
    pinned = choose_windows(nights, WindowSpec(reference_from=nights[2], reference_to=nights[5],
                                               recent_nights=2))
    assert pinned.reference == tuple(nights[2:6]) and pinned.recent == tuple(nights[8:])
    with pytest.raises(ValueError, match="both"):
        WindowSpec(reference_from=nights[0])


# ---------------------------------------------------------------------------------------------
# the monitor on PostgreSQL


@pytest.fixture(scope="module")
def drift_db(pg_server_url: str):
    """Three stable sites and site-d, whose new scanner (kernel FC68) and shifted scores start on
    night 22."""
    rng = random.Random(20260101)
    specs = [s for site in STABLE for s in site_specs(rng, site)]
    specs += site_specs(rng, "site-d", kernel_change=True, score_shift=0.25)
    specs += [StudySpec(uid="2.25.9.0.0", site="site-new", day=DAY0 + timedelta(days=29),
                        probability=0.2)]  # one night only: no windows yet
    for url in fresh_database(pg_server_url, "bloodnet_drift"):
        write_studies(url, specs)
        yield url


def test_stable_sites_stay_ok_and_the_drifting_site_alerts(drift_db: str) -> None:
    report = run_drift(drift_db, reference=14, recent=7, webhook_url="", run_key="drift-1")
    assert set(report.sites) == {*STABLE, "site-d"}
    assert "site-new" in report.skipped_sites
    for site in STABLE:
        bad = [(m.metric, m.statistic, m.value, m.p_value, m.status)
               for m in report.sites[site] if m.status != "ok"]
        assert bad == [], f"false alarm at {site}: {bad}"
    drifted = {(m.metric, m.statistic): m for m in report.sites["site-d"]}
    assert drifted[("metadata.kernel", "PSI")].status == "alert"
    assert drifted[("metadata.kernel", "chi2")].status == "alert"
    assert drifted[("score.probability", "KS")].status == "alert"
    assert drifted[("score.probability", "PSI")].status == "alert"
    # the scanner change did not touch manufacturer, HU or rejects
    for key in [("metadata.manufacturer", "chi2"), ("hu.brain_median", "KS"),
                ("reject_rate.any", "two_prop")]:
        assert drifted[key].status == "ok", key
    alerted = {(a.site, a.metric, a.statistic) for a in report.alerts}
    assert {("site-d", "metadata.kernel", "PSI"), ("site-d", "score.probability", "KS")} <= alerted
    assert {a.site for a in report.alerts} == {"site-d"}

    # every statistic is stored with thresholds, status and windows; alerts as rows
    engine = make_engine(drift_db)
    with engine.connect() as conn:
        n_stored = conn.execute(text(
            "SELECT count(*) FROM drift_metrics WHERE drift_run_id = :r"),
            {"r": report.drift_run_id}).scalar_one()
        kernel = conn.execute(text(
            "SELECT value, threshold_warn, threshold_alert, status, reference_from, recent_to,"
            " n_reference, n_recent FROM drift_metrics WHERE drift_run_id = :r"
            " AND site = 'site-d' AND feature = 'kernel' AND statistic = 'PSI'"),
            {"r": report.drift_run_id}).one()
        alert_rows = conn.execute(text(
            "SELECT site, feature, statistic, delivery FROM drift_alerts WHERE drift_run_id = :r"),
            {"r": report.drift_run_id}).all()
    engine.dispose()
    assert n_stored == sum(len(v) for v in report.sites.values())
    assert kernel.status == "alert" and kernel.threshold_alert == 0.25
    assert kernel.threshold_warn == 0.10 and kernel.value > 1
    assert kernel.reference_from == DAY0 and kernel.recent_to == DAY0 + timedelta(days=29)
    assert kernel.n_reference > 100 and kernel.n_recent == 7 * PER_NIGHT
    assert {(r.site, r.feature, r.statistic) for r in alert_rows} == {
        (a.site, a.feature, a.statistic) for a in report.alerts}
    assert {r.delivery for r in alert_rows} == {"disabled"}

    lines = summary_lines(drift_db)
    assert any(line.startswith("  ALERT site-d metadata.kernel PSI=") for line in lines)
    assert not any("ALERT site-a" in line for line in lines)

    # a rerun of the same run key replaces its rows instead of adding more
    again = run_drift(drift_db, reference=14, recent=7, webhook_url="", run_key="drift-1")
    assert again.drift_run_id == report.drift_run_id
    engine = make_engine(drift_db)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM drift_metrics WHERE drift_run_id = :r"),
                            {"r": report.drift_run_id}).scalar_one() == n_stored
        assert conn.execute(text("SELECT count(*) FROM drift_alerts WHERE drift_run_id = :r"),
                            {"r": report.drift_run_id}).scalar_one() == len(alert_rows)
    engine.dispose()


def test_a_pinned_reference_inside_the_shift_sees_no_kernel_drift(drift_db: str) -> None:
    # Reference = nights 22-25, recent = the last 4 nights: both after the scanner change.
    spec = WindowSpec(reference_from=DAY0 + timedelta(days=SHIFT_NIGHT),
                      reference_to=DAY0 + timedelta(days=25), recent_nights=4)
    report = run_drift(drift_db, reference=spec, webhook_url="",
                       thresholds=Thresholds(psi=Rule(0.1, 0.25, min_reference=10)))
    kernel = {(m.metric, m.statistic): m for m in report.sites["site-d"]}
    assert kernel[("metadata.kernel", "PSI")].status == "ok"
    assert kernel[("metadata.kernel", "PSI")].windows.reference_from == spec.reference_from


def test_too_little_data_is_stored_with_a_note_not_alerted(drift_db: str) -> None:
    report = run_drift(drift_db, reference=14, recent=1, webhook_url="",
                       thresholds=Thresholds(ks=Rule(0.15, 0.25, min_recent=50)))
    ks = {(m.site, m.metric): m for rows in report.sites.values() for m in rows
          if m.statistic == "KS"}
    row = ks[("site-d", "score.probability")]
    assert row.value is None and row.status == "ok" and "insufficient data" in row.note


def test_drift_cli_prints_one_json_object(drift_db: str) -> None:
    res = subprocess.run(
        [str(Path(sys.executable).with_name("bloodnet")), "drift", "--db", drift_db, "--json",
         "--reference-nights", "14", "--recent-nights", "7"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "BLOODNET_ALERT_WEBHOOK": ""},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)  # exactly one JSON document on stdout
    assert set(doc) >= {"sites", "alerts"}
    assert set(doc["sites"]) == {*STABLE, "site-d"}
    for rows in doc["sites"].values():
        for row in rows:
            assert {"metric", "statistic", "value", "threshold", "status"} <= set(row)
            assert row["status"] in ("ok", "warn", "alert")
    assert {a["site"] for a in doc["alerts"]} == {"site-d"}
    assert all({"site", "metric", "value", "threshold"} <= set(a) for a in doc["alerts"])
    alerting_rows = {(site, r["metric"], r["statistic"]) for site, rows in doc["sites"].items()
                     for r in rows if r["status"] == "alert"}
    assert {(a["site"], a["metric"], a["statistic"]) for a in doc["alerts"]} == alerting_rows
    assert "drift_alert" in res.stderr  # the structured log line went to stderr
    assert MODEL_VERSION == doc["model_version"]
