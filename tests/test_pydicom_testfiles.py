"""The validator over pydicom's bundled test files, written by other people: odd transfer syntaxes,
truncated files, DICOMDIRs, RT objects, no preamble, big endian, private sequences.

It must not crash, must accept nothing (none of them is a head CT) and must account for every
file. The files are read straight from ``DATA_ROOT / "test_files"``: ``get_testdata_files()``
would try to download the ones pydicom does not bundle.
"""

from __future__ import annotations

from pathlib import Path

import pydicom.data.data_manager as dm
import pytest

from bloodnet_ops.pipeline import validate_source
from bloodnet_ops.reasons import Reason, Verdict
from bloodnet_ops.storage import LocalSource, S3Source, upload_folder

TEST_FILES = Path(dm.DATA_ROOT) / "test_files"
NOT_DICOM = (".json", ".txt", ".gz", ".icc", ".dump")


def _check(report, keys: set[str]) -> None:
    assert [s for s in report.studies if s.verdict != Verdict.REJECT] == []
    accounted = [k for s in report.studies for k in s.keys] + [u.key for u in report.unreadable]
    assert sorted(accounted) == sorted(keys)  # every file exactly once
    unreadable = {u.key: u for u in report.unreadable}
    for key in keys:
        if key.endswith(NOT_DICOM):
            assert unreadable[key].reason == Reason.UNREADABLE, key
    for s in report.studies:
        assert s.reasons, s.study_uid  # a rejection always says why
    # the known truncated ones are caught
    assert "truncated" in unreadable["MR_truncated.dcm"].detail
    # CT files are not head CTs by their content: they are rejected with a CT-level reason
    ct = next(s for s in report.studies if "CT_small.dcm" in s.keys)
    assert Reason.TOO_FEW_SLICES in ct.reasons


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pydicom_test_files_local() -> None:
    src = LocalSource(TEST_FILES)
    keys = {r.key for r in src.list()}
    assert len(keys) >= 170
    report = validate_source(src, workers=4)
    _check(report, keys)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pydicom_test_files_on_seaweedfs(s3_bucket) -> None:
    upload_folder(TEST_FILES, s3_bucket, "pydicom")
    src = S3Source(s3_bucket, "pydicom")
    keys = {r.key for r in src.list()}
    assert keys == {r.key for r in LocalSource(TEST_FILES).list()}
    report = validate_source(src, workers=8)
    _check(report, keys)
