"""Coverage-guided fuzzing (atheris / libFuzzer) of the header path: the ranged-GET parser and the
pure-Python validator steps that run on its output.

Each input is one object. It is parsed twice, from a ``HEADER_BYTES`` prefix and from a prefix cut
at half its length (the second forces the one full GET), then grouped by UID, its series
selected and the per-slice header table built, exactly as :func:`pipeline.validate_source` does
before the great-expectations suites. Nothing may raise; the parser must answer a
``SliceHeader`` or an ``UnreadableObject`` with reason ``unreadable`` and fetch at most once.

Run it (a corpus folder of valid DICOM files is a good start; new inputs are written into it)::

    .venv/bin/python fuzz/fuzz_headers.py CORPUS_DIR -max_total_time=60 -max_len=20000

``tests/test_fuzz_headers.py`` runs it for a short budget on seeds it writes itself.
"""

from __future__ import annotations

import logging
import sys
import warnings

import atheris

with atheris.instrument_imports(include=["bloodnet_ops", "pydicom"]):
    # pydicom is imported lazily by the parser; import it here so that it is instrumented too
    import pydicom
    import pydicom.filereader
    import pydicom.values  # noqa: F401

    from bloodnet_ops.headers import read_header
    from bloodnet_ops.reasons import Reason
    from bloodnet_ops.records import ObjectRef, SliceHeader, UnreadableObject
    from bloodnet_ops.series import group_by_study, select_series
    from bloodnet_ops.storage import HEADER_BYTES
    from bloodnet_ops.validation_rules import series_rows


class _Fetch:
    def __init__(self, data: bytes) -> None:
        self.data, self.calls = data, 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.data


def check_object(data: bytes) -> None:
    """The properties, for one input (raises AssertionError, which libFuzzer reports)."""
    headers = []
    for n, prefix in enumerate((HEADER_BYTES, len(data) // 2)):
        fetch = _Fetch(data)
        ref = ObjectRef(f"obj-{n}", "etag", len(data))
        out = read_header(ref, data[:prefix], fetch)
        assert fetch.calls <= 1, "more than one full GET"
        if isinstance(out, UnreadableObject):
            assert out.reason == Reason.UNREADABLE and out.key == ref.key
        else:
            assert isinstance(out, SliceHeader), type(out)
            assert out.study_uid and out.series_uid and out.sop_uid
            headers.append(out)
    for study_uid, series in group_by_study(headers).items():
        selection = select_series(study_uid, series)
        if selection.series_uid is not None and not selection.reasons:
            series_rows(selection, [h for hs in series.values() for h in hs])


def TestOneInput(data: bytes) -> None:  # the name atheris looks for
    check_object(data)


def main() -> None:
    logging.disable(logging.CRITICAL)  # pydicom warns about every odd value
    warnings.simplefilter("ignore")
    sys.setrecursionlimit(3000)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
