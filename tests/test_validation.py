"""The bad/good corpus gets exactly the right verdict and reasons; the GX suites agree with the same
rules in plain Python; every expectation's outcome is stored per study."""

from __future__ import annotations

from pathlib import Path

import badcorpus
import pytest

from bloodnet_ops.pipeline import validate_source
from bloodnet_ops.reasons import Reason, Verdict
from bloodnet_ops.records import SliceHeader, ValidationReport
from bloodnet_ops.storage import LocalSource
from bloodnet_ops.validation import HEADER_RULES, HU_RULES, run_suite
from bloodnet_ops.validation_rules import anatomy, has_contrast, transfer_syntax_decodable

CASES = badcorpus.build_corpus()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ValidationReport]:
    folder = tmp_path_factory.mktemp("badcorpus")
    badcorpus.write_corpus(folder, CASES)
    return folder, validate_source(LocalSource(folder), workers=4)


def test_every_reason_code_is_covered_by_the_corpus() -> None:
    covered = {r for c in CASES for r in c.reasons}
    assert covered == set(Reason)
    names = {c.name for c in CASES}
    assert {"duplicate_conflict", "duplicate_resent", "gantry_tilt", "contrast"} <= names


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_verdict_and_reasons(corpus, case: badcorpus.Case) -> None:
    _, report = corpus
    if case.study is None:
        (key,) = case.objects
        unreadable = {u.key: u for u in report.unreadable}
        assert key in unreadable, f"{key} should be unreadable"
        assert unreadable[key].reason == Reason.UNREADABLE
        return
    by_uid = {s.study_uid: s for s in report.studies}
    study = by_uid[case.study_uid]
    assert (study.verdict, study.reasons) == (case.verdict, case.reasons), [
        c for c in study.checks if not c.success]
    assert sorted(study.keys) == sorted(case.objects), "every object of the study is in its keys"


def test_every_object_accounted_for_exactly_once(corpus) -> None:
    folder, report = corpus
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    accounted = [k for s in report.studies for k in s.keys] + [u.key for u in report.unreadable]
    assert sorted(accounted) == on_disk
    assert len(report.studies) == sum(1 for c in CASES if c.study)


def test_checks_record_why(corpus) -> None:
    _, report = corpus
    by_uid = {s.study_uid: s for s in report.studies}
    gap = by_uid[badcorpus.uid("slice_gap")]
    failed = [c for c in gap.checks if not c.success]
    assert [(c.suite, c.expectation, c.column, c.reason) for c in failed] == [
        ("header", "expect_column_values_to_be_between", "step_ratio", Reason.SLICE_GAP)]
    assert failed[0].observed["worst"] == pytest.approx(3.0, rel=0.01)  # two slices missing
    good = by_uid[badcorpus.uid("good_ge")]
    suites = {c.suite for c in good.checks}
    assert suites == {"header", "hu"} and all(c.success for c in good.checks)
    assert len(good.checks) == len(HEADER_RULES) + len(HU_RULES)
    assert good.hu is not None and abs(good.hu.air_peak + 1000) < 50
    wrap = by_uid[badcorpus.uid("hu_wraparound")]
    air = next(c for c in wrap.checks if c.column == "air_peak")
    assert not air.success  # air wrapped to ~ +3000 HU: nothing below -500 HU at all
    no_axial = by_uid[badcorpus.uid("no_axial_series")]
    assert no_axial.checks[0].suite == "selection" and no_axial.series_uid is None


def test_gx_agrees_with_the_plain_rules(corpus) -> None:
    """The suites run through GX; the same rules evaluated in Python must fail the same studies."""
    from bloodnet_ops.series import group_by_study, select_series
    from bloodnet_ops.validation_rules import series_rows

    folder, _ = corpus
    src = LocalSource(folder)
    from bloodnet_ops.headers import read_headers

    headers = [h for h in read_headers(src, list(src.list())) if isinstance(h, SliceHeader)]
    rows = []
    for uid, by_series in group_by_study(headers).items():
        sel = select_series(uid, by_series)
        if sel.series_uid and not sel.reasons:
            rows.extend(series_rows(sel, [h for hs in by_series.values() for h in hs]).rows)
    outcome = run_suite("header", rows)
    for rule in HEADER_RULES:
        plain = {r.study_uid for r in rows if not rule.row_ok(getattr(r, rule.column))}
        gx = {s for s, checks in outcome.checks.items()
              for c in checks if c.column == rule.column and not c.success}
        assert plain == gx, rule.name


@pytest.mark.parametrize(
    ("body_part", "study_desc", "series_desc", "expected"),
    [
        ("HEAD", "", "", "head"), ("BRAIN", "", "", "head"), ("HEADNECK", "", "", "head"),
        ("SKULL", "CT CHEST", "", "head"), ("CHEST", "CT HEAD", "", "other"),
        ("ABDOMEN", "", "", "other"), ("", "CT HEAD WO", "", "head"),
        ("", "CCT nativ", "", "head"), ("", "CT Schädel", "", "head"),
        ("", "SCHAEDEL", "", "head"), ("", "", "Brain 5mm", "head"),
        ("", "CT THORAX", "", "other"), ("", "", "", "unknown"), ("ROUTINE", "", "", "unknown"),
        ("", "Cerebral CT", "", "head"), ("", "Kopf nativ", "", "head"),
        ("", "Trauma incident", "Routine distribution", "unknown"), ("", "CT C-SPINE", "", "other"),
        ("", "CT Head and Neck", "", "head"), ("", "CT Abdomen", "", "other"),
    ],
)
def test_anatomy(body_part: str, study_desc: str, series_desc: str, expected: str) -> None:
    h = SliceHeader(key="k", etag="e", size=1, study_uid="1", series_uid="2", sop_uid="3",
                    sop_class_uid="", modality="CT", transfer_syntax="", body_part=body_part,
                    study_description=study_desc, series_description=series_desc)
    assert anatomy([h]) == expected


@pytest.mark.parametrize(
    ("agent", "expected"),
    [("", False), ("NONE", False), ("No", False), ("n/a", False), ("OMNIPAQUE 350", True),
     ("IODINE", True), ("APPLIED", True), ("ohne KM", False), ("  ", False),
     ("NO CONTRAST", False), ("Non-ionic contrast", True), ("Without", False)],
)
def test_contrast_agent_placeholders(agent: str, expected: bool) -> None:
    assert has_contrast(agent) is expected


def test_transfer_syntax_decodability() -> None:
    assert transfer_syntax_decodable("1.2.840.10008.1.2")
    assert transfer_syntax_decodable("1.2.840.10008.1.2.5")  # RLE
    assert transfer_syntax_decodable("1.2.840.10008.1.2.4.70")  # JPEG Lossless SV1 (gdcm)
    assert transfer_syntax_decodable("1.2.840.10008.1.2.4.90")  # JPEG 2000 lossless
    assert not transfer_syntax_decodable("1.2.840.10008.1.2.4.100")  # MPEG2 video
    assert not transfer_syntax_decodable("1.2.3.4.5.6")  # private, unknown
    assert Verdict.ACCEPT.value == "accept"


@pytest.mark.parametrize(("name", "regular"), [("good_ge", True), ("good_thin_no_extras", True),
                                               ("slice_gap", False)])
def test_step_check_agrees_with_highdicom(corpus, name: str, regular: bool) -> None:
    """Our step rule is hand-written because highdicom rejects gantry-tilted stacks and gives no
    diagnostics; on straight series it must agree with highdicom's volume check."""
    from io import BytesIO

    import pydicom
    from highdicom.spatial import get_series_volume_positions

    _, report = corpus
    study = next(s for s in report.studies if s.study_uid == badcorpus.uid(name))
    case = next(c for c in CASES if c.name == name)
    datasets = [pydicom.dcmread(BytesIO(case.objects[k]), stop_before_pixels=True)
                for k in study.series_keys]
    spacing, _ = get_series_volume_positions(datasets)
    assert (spacing is not None) is regular
    gap_ok = next(c for c in study.checks if c.column == "step_ratio").success
    assert gap_ok is regular
