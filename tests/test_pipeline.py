"""validate_source end to end: header-first reads (counted, local and on SeaweedFS), the HU stage,
volumes for scoring, site labels, the CLI contract and persistence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import defaultdict
from pathlib import Path

import badcorpus
import numpy as np
import pytest

from bloodnet_ops.pipeline import validate_source
from bloodnet_ops.reasons import Reason, Verdict
from bloodnet_ops.records import ObjectRef
from bloodnet_ops.storage import HEADER_BYTES, LocalSource, S3Source, upload_folder
from bloodnet_ops.volumes import iter_scorable, load_study_volume

REPO = Path(__file__).resolve().parents[1]
SMALL = ("good_ge", "good_signed", "hu_offset", "slice_gap", "duplicate_resent", "gantry_tilt")


class CountingSource:
    """Wraps a real source and counts what each key costs: ranged bytes and full GETs."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.ranged: dict[str, int] = defaultdict(int)
        self.full: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()

    def list(self):
        return self.inner.list()

    def get_range(self, key: str, length: int) -> bytes:
        data = self.inner.get_range(key, length)
        with self.lock:
            self.ranged[key] += len(data)
        return data

    def get(self, key: str) -> bytes:
        with self.lock:
            self.full[key] += 1
        return self.inner.get(key)

    def put(self, key: str, data: bytes, content_type: str = "application/dicom") -> None:
        self.inner.put(key, data, content_type)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[badcorpus.Case]]:
    cases = [c for c in badcorpus.build_corpus() if c.name in SMALL or c.study is None]
    folder = tmp_path_factory.mktemp("small")
    badcorpus.write_corpus(folder, cases)
    return folder, cases


def _verdicts(report) -> dict[str, tuple[Verdict, list[Reason]]]:
    return {s.study_uid: (s.verdict, s.reasons) for s in report.studies}


def _check_reads(src: CountingSource, report, cases: list[badcorpus.Case]) -> None:
    by_uid = {s.study_uid: s for s in report.studies}
    for case in cases:
        if case.study is None:
            continue
        study = by_uid[case.study_uid]
        scored = set(study.series_keys) if case.name != "slice_gap" else set()
        for key, data in case.objects.items():
            if key in scored or key in _duplicate_copies(study, case):
                assert src.full[key] == 1, (case.name, key)  # pixels: exactly one full GET
            else:  # localizer, bone kernel, and every object of a header-rejected study
                assert src.full[key] == 0, (case.name, key)
                assert src.ranged[key] == min(HEADER_BYTES, len(data))


def _duplicate_copies(study, case) -> set[str]:
    """Re-sent copies outside the scored series: fetched once to compare their bytes."""
    scored = {case.objects[k] for k in study.series_keys}
    return {k for k, b in case.objects.items() if k not in study.series_keys and b in scored}


def test_header_first_reads_and_verdicts_local(small) -> None:
    folder, cases = small
    src = CountingSource(LocalSource(folder))
    report = validate_source(src, workers=4)
    expected = {c.study_uid: (c.verdict, c.reasons) for c in cases if c.study}
    assert _verdicts(report) == expected
    _check_reads(src, report, cases)
    # the bone and localizer series were only ever read as HEADER_BYTES prefixes
    good = next(s for s in report.studies if s.study_uid == badcorpus.uid("good_ge"))
    others = set(good.keys) - set(good.series_keys)
    assert len(others) == 25 and all(src.full[k] == 0 for k in others)


def test_hu_check_off_gives_header_only_verdicts(small) -> None:
    folder, _ = small
    src = CountingSource(LocalSource(folder))
    report = validate_source(src, hu_check=False, workers=2)
    offset = next(s for s in report.studies if s.study_uid == badcorpus.uid("hu_offset"))
    assert offset.verdict == Verdict.ACCEPT and offset.hu is None
    assert sum(src.full.values()) == 0  # no pixels fetched at all


def test_given_objects_only(small) -> None:
    folder, cases = small
    src = LocalSource(folder)
    good = next(c for c in cases if c.name == "good_ge")
    refs = [r for r in src.list() if r.key in good.objects]
    report = validate_source(src, objects=refs, workers=2)
    assert len(report.studies) == 1 and report.studies[0].verdict == Verdict.ACCEPT
    assert report.accounted_keys() == set(good.objects)


def test_volumes_for_scoring(small) -> None:
    folder, _ = small
    src = LocalSource(folder)
    report = validate_source(src, workers=2)
    scorable = list(iter_scorable(src, report, workers=2))
    expected = {s.study_uid for s in report.studies if s.verdict != Verdict.REJECT}
    assert {s.study_uid for s, _ in scorable} == expected
    for study, vol in scorable:
        assert vol.hu.shape == (study.n_slices, 64, 64) and vol.hu.dtype == np.float32
        assert np.all(np.diff(vol.positions) > 0)
    study, vol = scorable[0]
    np.testing.assert_array_equal(load_study_volume(src, study).hu, vol.hu)


def test_site_from_institution_then_first_path_component(tmp_path) -> None:
    spec = badcorpus.SeriesSpec(n=12, spacing=5.0)
    a = badcorpus.make_series("site-a-study", "s1", spec)
    for ds in a:
        ds.InstitutionName = "Hospital A"
    b = badcorpus.make_series("site-b-study", "s2", spec)
    c = badcorpus.make_series("site-c-study", "s3", spec)
    for i, ds in enumerate(a):
        (tmp_path / "x" / f"{i}.dcm").parent.mkdir(exist_ok=True)
        (tmp_path / "x" / f"{i}.dcm").write_bytes(badcorpus.to_bytes(ds))
    for i, ds in enumerate(b):
        (tmp_path / "site-b" / "deep" / f"{i}").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "site-b" / "deep" / f"{i}").write_bytes(badcorpus.to_bytes(ds))
    for i, ds in enumerate(c):
        (tmp_path / f"flat{i}.dcm").write_bytes(badcorpus.to_bytes(ds))
    report = validate_source(LocalSource(tmp_path), hu_check=False, workers=2)
    sites = {s.study_uid: s.site for s in report.studies}
    assert sites == {badcorpus.uid("site-a-study"): "Hospital A",
                     badcorpus.uid("site-b-study"): "site-b",
                     badcorpus.uid("site-c-study"): "unknown"}


def test_vanished_object_is_unreadable_not_a_crash(small) -> None:
    folder, _ = small
    src = LocalSource(folder)
    refs = list(src.list()) + [ObjectRef("gone/never-there.dcm", "x", 5000)]
    report = validate_source(src, objects=refs, hu_check=False, workers=2)
    gone = next(u for u in report.unreadable if u.key == "gone/never-there.dcm")
    assert gone.reason == Reason.UNREADABLE and "fetch" in gone.detail


def test_same_verdicts_and_ranged_reads_on_seaweedfs(small, s3_bucket) -> None:
    folder, cases = small
    upload_folder(folder, s3_bucket, "night-1/archive")
    local = validate_source(LocalSource(folder), workers=4)
    src = CountingSource(S3Source(s3_bucket, "night-1/archive"))
    report = validate_source(src, workers=8)
    assert _verdicts(report) == _verdicts(local)
    assert sorted(u.key for u in report.unreadable) == sorted(u.key for u in local.unreadable)
    _check_reads(src, report, cases)


def _bloodnet(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("bloodnet")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})}, cwd=REPO, check=False)


def test_cli_json_contract(small) -> None:
    folder, cases = small
    out = _bloodnet("validate", str(folder), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)  # exactly one JSON document on stdout
    assert isinstance(doc, list)
    studies = [d for d in doc if d["study_uid"] is not None]
    loose = [d for d in doc if d["study_uid"] is None]
    assert len(studies) == sum(1 for c in cases if c.study)
    assert {d["key"] for d in loose} == {k for c in cases if c.study is None for k in c.objects}
    for d in studies:
        assert set(d) == {"study_uid", "series_uid", "site", "verdict", "reasons"}
        assert "probability" not in d
    for d in loose:
        assert d["verdict"] == "reject" and d["reasons"] == ["unreadable"]
    expected = {c.study_uid: [r.value for r in c.reasons] for c in cases if c.study}
    assert {d["study_uid"]: d["reasons"] for d in studies} == expected


def test_cli_table_and_db(small, database_url) -> None:
    folder, _ = small
    out = _bloodnet("validate", str(folder), "--db", database_url)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "reject" in out.stdout and "accept" in out.stdout
    from bloodnet_ops.db.repo import table_counts
    from bloodnet_ops.db.session import make_engine

    engine = make_engine(database_url)
    try:
        counts = table_counts(engine)
    finally:
        engine.dispose()
    assert counts["studies"] >= len(SMALL) and counts["quarantine"] >= 1
    assert counts["expectation_results"] > 0


def test_cli_missing_source_is_an_error() -> None:
    out = _bloodnet("validate", "/nonexistent/folder", "--json")
    assert out.returncode == 2 and out.stdout == ""


def test_every_synthetic_study_is_accepted(synth_small: Path) -> None:
    import csv

    report = validate_source(LocalSource(synth_small), workers=4)
    labels = list(csv.DictReader((synth_small / "labels.csv").open()))
    by_uid = {s.study_uid: s for s in report.studies}
    assert len(by_uid) == len(labels)
    for row in labels:
        study = by_uid[row["study_uid"]]
        assert study.verdict == Verdict.ACCEPT, (study.reasons, [
            c for c in study.checks if not c.success])
        assert study.series_uid == row["series_uid"]  # the diagnostic series was chosen
        assert study.site == row["site"]
    dicom = {k for s in report.studies for k in s.keys}
    non_dicom = {u.key for u in report.unreadable}
    assert all(not k.endswith(".dcm") for k in non_dicom)  # labels, masks, reads
    assert dicom | non_dicom == {r.key for r in report.objects}


def test_prefetch_overlaps_one_study_ahead_only(small) -> None:
    """While study i is processed, the GETs of study i+1 may run, never those of i+2: memory
    stays at two studies however many there are."""
    from bloodnet_ops.pipeline import prefetched

    folder, _ = small
    src = LocalSource(folder)
    keys = sorted(r.key for r in src.list())
    jobs = [(i, keys[i * 5:(i + 1) * 5]) for i in range(6)]
    owner = {k: i for i, ks in jobs for k in ks}
    started: list[int] = []

    class Recording:
        uri = src.uri

        def get(self, key: str) -> bytes:
            started.append(owner[key])
            return src.get(key)

    for i, blobs in prefetched(Recording(), jobs, workers=4):
        assert not isinstance(blobs, BaseException) and len(blobs) == 5
        assert max(started) <= i + 1


def test_cli_on_an_s3_prefix_accepts_every_synthetic_study(synth_small: Path, s3_bucket) -> None:
    import csv

    upload_folder(synth_small, s3_bucket, "nightly/2024-01-02")
    out = _bloodnet("validate", f"s3://{s3_bucket}/nightly/2024-01-02", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    studies = {d["study_uid"]: d for d in doc if d["study_uid"] is not None}
    labels = list(csv.DictReader((synth_small / "labels.csv").open()))
    assert set(studies) == {r["study_uid"] for r in labels}
    for row in labels:
        d = studies[row["study_uid"]]
        assert (d["verdict"], d["reasons"], d["series_uid"], d["site"]) == (
            "accept", [], row["series_uid"], row["site"])


# --------------------------------------------------------------------------- large nights
def _study_view(s) -> tuple:
    return (s.contract(), s.keys, s.series_keys, s.n_slices, s.patient_id, s.kernel,
            [(c.suite, c.expectation, c.success, c.observed, c.reason) for c in s.checks], s.hu)


def test_a_series_over_the_size_limit_is_rejected_before_its_pixels_are_fetched(
        small, monkeypatch) -> None:
    """``BLOODNET_MAX_SERIES_VOXELS`` caps what is loaded: a larger series keeps the stable
    code ``pixel_decode_failed``, with a detail that names the limit and where it is set."""
    from bloodnet_ops.pipeline import MAX_VOXELS_ENV

    folder, cases = small
    good = next(c for c in cases if c.name == "good_ge")
    monkeypatch.setenv(MAX_VOXELS_ENV, "1000")
    src = CountingSource(LocalSource(folder))
    report = validate_source(src, workers=4)
    study = next(s for s in report.studies if s.study_uid == good.study_uid)
    assert study.verdict == Verdict.REJECT
    assert study.reasons == [Reason.PIXEL_DECODE_FAILED]
    assert "exceed the limit" in study.detail and "1,000 voxels" in study.detail
    assert MAX_VOXELS_ENV in study.detail
    assert not any(src.full[k] for k in study.series_keys)  # no pixel GETs
    assert study.contract()["reasons"] == ["pixel_decode_failed"]  # JSON contract unchanged
    assert "detail" not in study.contract()


def test_partitioned_validation_gives_the_same_verdicts(small, monkeypatch, tmp_path) -> None:
    """A night split into partitions (headers spilled to disk by study, encrypted), read in
    small rounds, with the known objects of its studies brought in by ``more``: the same
    verdicts, checks and HU statistics as one in-memory pass, and every object in exactly one
    part."""
    from bloodnet_ops import pipeline

    folder, _ = small
    src = LocalSource(folder)
    whole = validate_source(src, workers=4)
    monkeypatch.setattr(pipeline, "READ_CHUNK", 16)
    # the night offers one object per study (and every unreadable one); the rest is "known"
    offered = [o for o in whole.objects if o.key in {u.key for u in whole.unreadable}]
    offered += [o for o in whole.objects if o.key in {s.keys[0] for s in whole.studies}]
    by_study = {s.study_uid: set(s.keys) for s in whole.studies}
    asked: list[list[str]] = []

    def more(study_uids: list[str]) -> list[ObjectRef]:
        asked.append(study_uids)
        keys = set().union(*(by_study[u] for u in study_uids)) - {o.key for o in offered}
        return [o for o in whole.objects if o.key in keys]

    spill_dir = tmp_path / "tmp"
    spill_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill_dir))
    ids = {s.patient_id.encode() for s in whole.studies if s.patient_id}
    assert ids
    parts, spilled = [], []
    for part in pipeline.iter_validation(src, iter(offered), total=len(offered), more=more,
                                         workers=4, partition_objects=7):
        if part.studies and not spilled:  # headers of the other partitions wait on disk
            spilled = [f.read_bytes() for f in spill_dir.rglob("*") if f.is_file()]
        parts.append(part)
    assert spilled and not any(i in blob for i in ids for blob in spilled)  # sealed, not plain
    assert not any(spill_dir.iterdir())  # removed at the end
    assert asked == [sorted(by_study)]
    assert len([p for p in parts if p.studies]) > 1  # really partitioned
    studies = sorted((s for p in parts for s in p.studies), key=lambda s: s.study_uid)
    assert [_study_view(s) for s in studies] == [_study_view(s) for s in whole.studies]
    assert [u.key for p in parts for u in p.unreadable] == [u.key for u in whole.unreadable]
    for p in parts:  # each part accounts for its own objects, and only for them
        assert sorted(o.key for o in p.objects) == sorted(
            [k for s in p.studies for k in s.keys] + [u.key for u in p.unreadable])
    assert sorted(o.key for p in parts for o in p.objects) == sorted(
        o.key for o in whole.objects)


def _clone_study(base: Path, out: Path, copies: int) -> None:
    """``copies`` copies of the one study under ``base``, each with its own Study, Series and
    SOP Instance UIDs: a night of identical studies, so peaks compare like with like."""
    import pydicom

    out.mkdir(parents=True, exist_ok=True)
    files = sorted(base.rglob("*.dcm"))
    for i in range(copies):
        for f in files:
            ds = pydicom.dcmread(f)
            for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                setattr(ds, kw, f"{getattr(ds, kw)}.{i + 1}")
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(out / f"{i:03d}-{f.name}")


@pytest.mark.slow
def test_validation_memory_does_not_grow_with_the_night(tmp_path, monkeypatch) -> None:
    """Peak Python memory (tracemalloc) while a night of N, then 4N identical studies is
    validated part by part, as ``validate_and_record`` does it (partitions of about one study).
    One partition's headers, selection, suites and HU volumes are in memory at a time, so the
    peak must not grow with the night: measured ~25 KiB per extra study (allocator free lists
    filling), against ~280 KiB per study when every header of the night was held until the end
    (``validate_source`` before partitioning, same setup). The suites run in their plain-Python
    form (the same rules; GX is exercised elsewhere), which keeps this test short."""
    import gc
    import tracemalloc

    from bloodnet_ops import pipeline, validation
    from bloodnet_ops.synth import generate_dataset

    def no_gx():
        raise RuntimeError("plain rules for this test")

    monkeypatch.setattr(validation, "runner", no_gx)
    monkeypatch.setattr(validation.log, "disabled", True)  # one traceback per partition
    monkeypatch.setattr(pipeline, "READ_CHUNK", 32)
    n = 2
    generate_dataset(tmp_path / "one", studies=1, sites=1, seed=11, matrix=64, progress=False)
    _clone_study(tmp_path / "one", tmp_path / "night", 4 * n)
    src = LocalSource(tmp_path / "night")
    objs = sorted(src.list(), key=lambda o: o.key)

    def night(k: int) -> list[ObjectRef]:
        return [o for o in objs if int(o.key.split("-")[0]) < k]

    for _ in pipeline.iter_validation(src, night(1), total=10, workers=2, partition_objects=1):
        pass  # first use: lazy imports and caches are not the night's memory
    peaks = {}
    for k in (n, 4 * n):
        gc.collect()
        tracemalloc.start(1)
        try:
            seen = 0
            for part in pipeline.iter_validation(src, iter(night(k)), total=len(night(k)),
                                                 workers=2, partition_objects=1):
                seen += len(part.studies)
                assert all(s.verdict == Verdict.ACCEPT for s in part.studies)
                del part
            peaks[k] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert seen == k
    per_study = (peaks[4 * n] - peaks[n]) / (3 * n)
    assert per_study < 64 * 1024, (peaks, f"{per_study / 1024:.0f} KiB per study")
