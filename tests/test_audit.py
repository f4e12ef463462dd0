"""The retrospective audit on a small hand-built table whose figures are worked out by hand below:
the worklist, per-site and overall sensitivity/specificity/PPV/NPV with Wilson CIs, AUC with a
DeLong CI, the re-read sample, storage per audit run, and the adjudication round trip (CLI and
library) changing the next audit's figures."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from analytics_helpers import StudySpec, fresh_database, write_studies
from sqlalchemy import text

from bloodnet_ops.audit.adjudicate import NotOnWorklist, adjudicate
from bloodnet_ops.audit.run import run_audit
from bloodnet_ops.audit.sampling import SamplingPlan, reread_sample
from bloodnet_ops.audit.summary import summary_lines
from bloodnet_ops.db.session import make_engine

DAY_A, DAY_B = date(2026, 2, 1), date(2026, 2, 2)

#: uid, site, probability (the model calls >= 0.5 positive), volume mL, read (None: no read)
TABLE = [
    ("a1", "site-a", 0.95, 12.0, 1),  # TP
    ("a2", "site-a", 0.90, 3.0, 0),  # FP  -> missed_by_reader #1
    ("a3", "site-a", 0.70, 20.0, 0),  # FP  -> missed_by_reader #2
    ("a4", "site-a", 0.60, 1.0, 1),  # TP
    ("a5", "site-a", 0.40, 0.5, 1),  # FN  -> missed_by_model #1
    ("a6", "site-a", 0.20, 0.0, 0),  # TN
    ("a7", "site-a", 0.10, 0.0, 0),  # TN
    ("a8", "site-a", 0.05, 0.0, None),  # no read: not in the figures
    ("b1", "site-b", 0.85, 8.0, 1),  # TP
    ("b2", "site-b", 0.30, 0.2, 1),  # FN  -> missed_by_model #2
    ("b3", "site-b", 0.15, 0.0, 0),  # TN
    ("b4", "site-b", 0.12, 0.0, 0),  # TN
    ("b5", "site-b", 0.08, 0.0, 0),  # TN
    ("b6", "site-b", 0.55, 2.0, 0),  # FP  -> missed_by_reader #3
]
UID = "1.2.840.99.{}".format

# Worked out by hand from TABLE.
#   site-a: TP 2 (a1 a4), FP 2 (a2 a3), FN 1 (a5), TN 2 (a6 a7)
#   site-b: TP 1 (b1), FP 1 (b6), FN 1 (b2), TN 3 (b3 b4 b5)
#   AUC site-a: positives .95 .60 .40 vs negatives .90 .70 .20 .10 → 4 + 2 + 2 = 8 of 12 pairs
#   AUC site-b: positives .85 .30 vs negatives .55 .15 .12 .08 → 4 + 3 = 7 of 8 pairs
#   AUC overall: .95→8, .85→7, .60→6, .40→5, .30→5 of 8 negatives each = 31 of 40 pairs
EXPECTED = {
    "site-a": {"n": 7, "tp": 2, "fp": 2, "tn": 2, "fn": 1, "sensitivity": 2 / 3,
               "specificity": 2 / 4, "ppv": 2 / 4, "npv": 2 / 3, "auc": 8 / 12},
    "site-b": {"n": 6, "tp": 1, "fp": 1, "tn": 3, "fn": 1, "sensitivity": 1 / 2,
               "specificity": 3 / 4, "ppv": 1 / 2, "npv": 3 / 4, "auc": 7 / 8},
    "overall": {"n": 13, "tp": 3, "fp": 3, "tn": 5, "fn": 2, "sensitivity": 3 / 5,
                "specificity": 5 / 8, "ppv": 3 / 6, "npv": 5 / 7, "auc": 31 / 40},
}
#: 95 % Wilson score intervals (z = 1.959964), from the closed form, to 4 decimals.
WILSON = {(2, 3): (0.2077, 0.9385), (1, 2): (0.0945, 0.9055), (3, 5): (0.2307, 0.8824),
          (5, 8): (0.3057, 0.8632), (3, 4): (0.3006, 0.9544), (2, 4): (0.1500, 0.8500)}


def _specs() -> list[StudySpec]:
    return [StudySpec(UID(u), site, DAY_A if site == "site-a" else DAY_B, probability=p,
                      volume_ml=v, accession=f"ACC-{u}") for u, site, p, v, _ in TABLE]


def _reads_csv(path: Path) -> Path:
    lines = ["study_uid,accession_number,site,read_date,reader,ich,subtypes,report"]
    for u, site, _, _, read in TABLE:
        if read is None:
            continue
        # half of the reads carry only the accession number
        uid, acc = (UID(u), "") if u[1] in "1357" else ("", f"ACC-{u}")
        lines.append(f"{uid},{acc},{site},2026-02-03,Dr Who,{read},{'SDH' if read else ''},")
    lines.append("1.2.840.99.zz,ACC-zz,site-a,2026-02-03,Dr Who,1,IPH,")  # never screened
    lines.append(",,site-b,2026-02-03,Dr Who,0,,")  # no identifier
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def audit_db(pg_server_url: str, tmp_path: Path):
    for url in fresh_database(pg_server_url, "bloodnet_audit"):
        write_studies(url, _specs())
        yield url, _reads_csv(tmp_path / "reads.csv")


def _wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval written out, as a second check of the tabled values."""
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _delong(pos: list[float], neg: list[float]) -> tuple[float, float, float]:
    """AUC and its DeLong 95 % CI from the pairwise definition (O(m·n), no ranks)."""
    psi = np.array([[1.0 if x > y else 0.5 if x == y else 0.0 for y in neg] for x in pos])
    auc = psi.mean()
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    se = math.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))
    return auc, max(0.0, auc - 1.959963984540054 * se), min(1.0, auc + 1.959963984540054 * se)


def test_wilson_table_matches_the_closed_form() -> None:
    for (k, n), (lo, hi) in WILSON.items():
        assert _wilson(k, n) == pytest.approx((lo, hi), abs=5e-5)


def test_audit_worklist_and_figures_match_the_hand_computation(audit_db) -> None:
    url, reads = audit_db
    report = run_audit(url, reads=reads, reread_rate=0.5, reread_min=1, reread_max=2,
                       run_key="audit-1")
    doc = report.contract()

    by_kind = {k: [(it["study_uid"], it["site"]) for it in doc["worklist"] if it["kind"] == k]
               for k in ("missed_by_reader", "missed_by_model", "reread_sample")}
    assert by_kind["missed_by_reader"] == [(UID("a2"), "site-a"), (UID("a3"), "site-a"),
                                           (UID("b6"), "site-b")]  # by probability
    assert by_kind["missed_by_model"] == [(UID("a5"), "site-a"), (UID("b2"), "site-b")]
    negatives = {"site-a": {UID(u) for u in ("a5", "a6", "a7", "a8")},
                 "site-b": {UID(u) for u in ("b2", "b3", "b4", "b5")}}
    for site, uids in negatives.items():  # ceil(0.5 × 4) = 2, capped at 2 per site
        sampled = {u for u, s in by_kind["reread_sample"] if s == site}
        assert len(sampled) == 2 and sampled <= uids
    a2 = next(it for it in doc["worklist"] if it["study_uid"] == UID("a2"))
    assert a2["probability"] == 0.90
    assert a2["volume_ml"] == 3.0 and a2["read_ich"] is False and a2["rank"] == 1
    assert a2["seg_key"] == f"out/{UID('a2')}/seg.dcm" and a2["series_uid"] == UID("a2") + ".1"

    for site, want in EXPECTED.items():
        got = doc["overall"] if site == "overall" else doc["sites"][site]
        for key, value in want.items():
            assert got[key] == pytest.approx(value), (site, key)
    # Wilson intervals of the proportions
    assert doc["sites"]["site-a"]["sensitivity_ci"] == pytest.approx(WILSON[(2, 3)], abs=1e-4)
    assert doc["sites"]["site-b"]["specificity_ci"] == pytest.approx(WILSON[(3, 4)], abs=1e-4)
    assert doc["overall"]["sensitivity_ci"] == pytest.approx(WILSON[(3, 5)], abs=1e-4)
    assert doc["overall"]["specificity_ci"] == pytest.approx(WILSON[(5, 8)], abs=1e-4)
    assert doc["overall"]["ppv_ci"] == pytest.approx(_wilson(3, 6), abs=1e-9)
    # DeLong interval of the overall AUC, from the pairwise definition
    pos = [0.95, 0.60, 0.40, 0.85, 0.30]
    neg = [0.90, 0.70, 0.20, 0.10, 0.55, 0.15, 0.12, 0.08]
    auc, lo, hi = _delong(pos, neg)
    assert auc == pytest.approx(31 / 40)
    assert doc["overall"]["auc_ci"] == pytest.approx([lo, hi], abs=1e-9)
    assert doc["unmatched_reads"] == 2
    assert report.counts["with_read"] == 13 and report.counts["studies"] == 14

    # stored per run: figures as rows, the worklist with its links
    engine = make_engine(url)
    with engine.connect() as conn:
        metrics = {(r.site, r.metric): r for r in conn.execute(text(
            "SELECT site, metric, value, ci_lo, ci_hi, n, method FROM audit_metrics"
            " WHERE audit_run_id = :r"), {"r": report.audit_run_id})}
        n_items = conn.execute(text("SELECT count(*) FROM audit_items WHERE audit_run_id = :r"),
                               {"r": report.audit_run_id}).scalar_one()
    engine.dispose()
    sens = metrics[("site-a", "sensitivity")]
    assert (sens.value, sens.n, sens.method) == (pytest.approx(2 / 3), 3, "wilson")
    assert (sens.ci_lo, sens.ci_hi) == pytest.approx(WILSON[(2, 3)], abs=1e-4)
    assert metrics[("overall", "auc")].method == "delong"
    assert metrics[("overall", "tp")].value == 3
    assert n_items == len(doc["worklist"]) == 3 + 2 + 4

    # the same run key again: the run is replaced, not duplicated, and the sample is the same
    again = run_audit(url, reread_rate=0.5, reread_min=1, reread_max=2, run_key="audit-1")
    assert again.audit_run_id == report.audit_run_id
    assert [it.contract() for it in again.worklist] == doc["worklist"]

    lines = summary_lines(url)  # what the demo prints
    assert "worklist 9 = 3 missed by reader + 2 missed by model + 4 re-read samples" in lines[0]
    site_a = next(line for line in lines if line.strip().startswith("site-a"))
    assert "n=7" in site_a and "sens 0.667 [0.208, 0.939]" in site_a
    assert "spec 0.500 [0.150, 0.850]" in site_a
    assert lines[-1] == "drift: no drift run yet"


def test_date_window_and_model_version_select_the_findings(audit_db) -> None:
    url, reads = audit_db
    only_b = run_audit(url, reads=reads, date_from="2026-02-02", date_to="2026-02-02")
    assert set(only_b.contract()["sites"]) == {"site-b"}
    assert only_b.overall.n == 6
    write_studies(url, [StudySpec(UID("a1"), "site-a", DAY_A, probability=0.2)],
                  model_version="bloodnet-test-2", run_id="run-2")
    newest = run_audit(url)
    assert newest.model_version == "bloodnet-test-2" and newest.counts["studies"] == 1
    pinned = run_audit(url, model_version="bloodnet-test-1")
    assert pinned.counts["studies"] == 14


def test_reread_sample_is_stratified_seeded_and_stable() -> None:
    negatives = [(f"site-{s}", f"1.2.{s}.{i}") for s in "ab" for i in range(40)]
    negatives += [("site-c", "1.2.c.0")]
    plan = SamplingPlan(rate=0.1, min_per_site=2, max_per_site=3)
    one = reread_sample(negatives, plan, seed="run:x")
    assert {s: len(v) for s, v in one.items()} == {"site-a": 3, "site-b": 3, "site-c": 1}
    assert reread_sample(list(reversed(negatives)), plan, seed="run:x") == one
    assert reread_sample(negatives, plan, seed="run:y") != one
    # a study added later does not reshuffle the ones already drawn
    grown = reread_sample(negatives + [("site-a", "1.2.a.new")], SamplingPlan(0.5, 0, 100),
                          seed="run:x")
    base = reread_sample(negatives, SamplingPlan(0.5, 0, 100), seed="run:x")
    assert set(base["site-b"]) == set(grown["site-b"])
    with pytest.raises(ValueError, match="rate"):
        SamplingPlan(rate=1.5)


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("bloodnet"))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300,
                          check=False, env=os.environ.copy())


def test_adjudications_feed_the_next_audit(audit_db) -> None:
    url, reads = audit_db
    first = run_audit(url, reads=reads, reread_rate=1.0, reread_min=0, reread_max=10)
    assert first.counts["reread_sample"] == 8  # every model negative

    # a2 was a reader miss (ICH present): through the CLI
    res = _cli("adjudicate", "--db", url, UID("a2"), "--kind", "missed_by_reader",
               "--outcome", "confirmed_miss", "--note", "small SDH on re-read",
               "--reviewer", "Dr Grey", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    rec = json.loads(res.stdout)
    assert rec["outcome"] == "confirmed_miss" and "Grey" not in res.stdout
    # b2's positive read was wrong; b6 is a confirmed model false positive (label unchanged)
    adjudicate(url, UID("b2"), kind="missed_by_model", outcome="false_positive")
    adjudicate(url, UID("b6"), kind="missed_by_reader", outcome="false_positive")
    # the re-read of a8 (no report) found blood; a6 was clean
    adjudicate(url, UID("a8"), kind="reread_sample", outcome="confirmed_miss")
    adjudicate(url, UID("a6"), kind="reread_sample", outcome="true_negative")
    # an item that is not on a worklist, and a bad outcome, are refused
    with pytest.raises(NotOnWorklist):
        adjudicate(url, UID("a1"), kind="missed_by_model", outcome="confirmed_miss")
    bad = _cli("adjudicate", "--db", url, UID("a2"), "--kind", "missed_by_reader",
               "--outcome", "probably")
    assert bad.returncode == 2 and "outcome must be one of" in bad.stderr

    doc = run_audit(url, reread_rate=1.0, reread_min=0, reread_max=10).contract()
    # By hand: site-a now TP 3 (a1 a2 a4), FP 1 (a3), FN 2 (a5 a8), TN 2 (a6 a7), n = 8;
    #          site-b now TP 1 (b1), FP 1 (b6), FN 0, TN 4 (b2 b3 b4 b5).
    a, b = doc["sites"]["site-a"], doc["sites"]["site-b"]
    assert (a["n"], a["tp"], a["fp"], a["fn"], a["tn"]) == (8, 3, 1, 2, 2)
    assert a["sensitivity"] == pytest.approx(3 / 5) and a["specificity"] == pytest.approx(2 / 3)
    assert (b["n"], b["tp"], b["fp"], b["fn"], b["tn"]) == (6, 1, 1, 0, 4)
    assert b["sensitivity"] == pytest.approx(1.0) and b["specificity"] == pytest.approx(4 / 5)
    # the missed-ICH rate among re-read model negatives: 1 of 2 adjudicated at site-a
    assert a["reread_miss_rate"] == pytest.approx(0.5) and a["reread_miss_rate_n"] == 2
    assert b["reread_miss_rate"] is None and b["reread_miss_rate_n"] == 0
    status = {(it["study_uid"], it["kind"]): it["adjudication"] for it in doc["worklist"]}
    assert status[(UID("a2"), "missed_by_reader")] == "confirmed_miss"
    assert status[(UID("a3"), "missed_by_reader")] is None

    # re-adjudicating replaces the verdict (one row per study and kind)
    adjudicate(url, UID("a2"), kind="missed_by_reader", outcome="false_positive")
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT outcome FROM adjudications WHERE study_uid = :u"),
                            {"u": UID("a2")}).scalars().all()
    engine.dispose()
    assert rows == ["false_positive"]


def test_audit_cli_prints_the_contract_json(audit_db) -> None:
    url, reads = audit_db
    res = _cli("audit", "--db", url, "--reads", str(reads), "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)  # exactly one JSON document on stdout
    assert {"worklist", "sites", "overall", "unmatched_reads"} <= set(doc)
    assert doc["unmatched_reads"] == 2
    for item in doc["worklist"]:
        assert {"study_uid", "site", "kind", "probability", "volume_ml"} <= set(item)
        assert item["kind"] in ("missed_by_reader", "missed_by_model", "reread_sample")
    keys = {"n", "sensitivity", "sensitivity_ci", "specificity", "specificity_ci", "auc",
            "auc_ci"}
    for fig in [*doc["sites"].values(), doc["overall"]]:
        assert keys <= set(fig)
        assert len(fig["sensitivity_ci"]) == 2
    assert doc["sites"]["site-b"]["auc"] == pytest.approx(7 / 8)
    assert "ACC-" not in res.stdout and "Dr Who" not in res.stdout + res.stderr
    human = _cli("audit", "--db", url)
    assert human.returncode == 0 and "site-a" in human.stdout and "sens" in human.stdout


def test_audit_finds_exactly_the_reader_misses_the_generator_injected(
    pg_server_url: str, tmp_path: Path,
) -> None:
    """Proof on data: synthetic DICOM with injected reader misses, validated by the real pipeline;
    findings from an oracle that knows the truth except for one deliberate model miss."""
    import csv

    from bloodnet_ops.db import repo
    from bloodnet_ops.pipeline import validate_source
    from bloodnet_ops.storage import LocalSource
    from bloodnet_ops.synth import generate_dataset

    root = tmp_path / "synth"
    summary = generate_dataset(root, studies=10, sites=2, seed=11, matrix=128,
                               positive_rate=0.6, reads_miss_rate=0.7, workers=1)
    with open(root / "labels.csv", newline="") as fh:
        truth = {r["study_uid"]: r for r in csv.DictReader(fh)}
    validation = validate_source(LocalSource(root))
    uid_of_acc = {s.accession_number: s.study_uid for s in validation.studies}
    with open(root / "reads.csv", newline="") as fh:  # a read may carry only the accession
        read_of = {r["study_uid"] or uid_of_acc[r["accession_number"]]: r
                   for r in csv.DictReader(fh)}
    injected = {u for u, t in truth.items() if t["ich"] == "1" and read_of[u]["ich"] == "0"}
    assert len(injected) == summary.counts["reads_missed"] >= 2
    over_called = {u for u, t in truth.items() if t["ich"] == "0" and read_of[u]["ich"] == "1"}
    # one true, correctly read hemorrhage that the "model" misses
    model_miss = min(u for u, t in truth.items() if t["ich"] == "1" and u not in injected)

    for url in fresh_database(pg_server_url, "bloodnet_proof"):
        engine = make_engine(url)
        repo.record_validation(engine, validation, source_uri=root.as_uri(), run_id="night-1")
        repo.register_model_version(engine, model_version="oracle", weights_sha256="1" * 64,
                                    threshold=0.5, variant="oracle")
        repo.upsert_findings(engine, [
            repo.FindingRow(
                series_uid=s.series_uid, model_version="oracle", preprocessing_version="p",
                study_uid=s.study_uid, site=s.site, patient_key="",
                probability=0.1 if s.study_uid == model_miss else
                (0.9 if truth[s.study_uid]["ich"] == "1" else 0.1),
                positive=truth[s.study_uid]["ich"] == "1" and s.study_uid != model_miss,
                volume_ml=float(truth[s.study_uid]["volume_ml"]), weights_sha256="1" * 64,
                run_id="night-1")
            for s in validation.studies if s.verdict != "reject"
        ])
        engine.dispose()
        report = run_audit(url, reads=root / "reads.csv", reread_rate=0.0, reread_min=0)
        kinds = {k: {it.study_uid for it in report.worklist if it.kind == k}
                 for k in ("missed_by_reader", "missed_by_model")}
        assert len(validation.studies) == 10 and report.counts["studies"] == 10
        assert report.reads.matched == 10 and report.unmatched_reads == 0
        assert kinds["missed_by_reader"] == injected  # exactly the injected misses
        assert kinds["missed_by_model"] == over_called | {model_miss}  # the model's own errors
        # against the reads, the oracle's errors are the injected misses and over-calls plus one
        o = report.overall
        assert (o.fp, o.fn) == (len(injected), len(over_called) + 1)
