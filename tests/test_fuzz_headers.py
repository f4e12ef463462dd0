"""Hostile input on the header path: property-based (hypothesis) and coverage-guided (atheris).

Inputs: random bytes, random bytes behind a valid preamble, and valid CT objects (explicit and
implicit VR, RLE, enhanced multi-frame) mutated structurally: bit flips, truncation, corrupted
element length fields, inserted garbage elements, duplicated elements and deeply nested
sequences. Properties:

- :func:`headers.read_header` never raises; it answers a ``SliceHeader`` (with all three UIDs)
  or an ``UnreadableObject`` with reason ``unreadable``, fetches the object at most once, and
  never echoes a header value (PHI) in its detail;
- :func:`pipeline.validate_source` over a folder of mutated objects next to a good series never
  raises and accounts for every object exactly once: in a study with a verdict, or unreadable.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from badcorpus import GE, SIGNED, SeriesSpec, as_enhanced, make_series, to_bytes
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bloodnet_ops.headers import read_header
from bloodnet_ops.reasons import Reason, Verdict, verdict_for
from bloodnet_ops.records import ObjectRef, SliceHeader, UnreadableObject
from bloodnet_ops.storage import HEADER_BYTES, LocalSource

REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: Header values of the seed objects that must never show up in a detail message.
PHI = ("Corpus^Bad", "BAD-", "ACC")


# ---------------------------------------------------------------------------------------------
# seeds and their element layout


@dataclass(frozen=True)
class Element:
    offset: int  #: where the tag starts
    header: int  #: bytes of tag + VR + length
    length_at: int  #: offset of the length field
    length_size: int  #: 2 or 4
    length: int


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV",
             b"UV"}


def elements(data: bytes, *, implicit: bool) -> list[Element]:
    """Top-level elements of a little-endian Part 10 object, walked by hand (the mutations need
    the byte offsets of tags and length fields, which pydicom does not expose)."""
    out: list[Element] = []
    pos = 132 if data[128:132] == b"DICM" else 0
    while pos + 8 <= len(data):
        group = struct.unpack_from("<H", data, pos)[0]
        if group == 2 or not implicit:
            vr = data[pos + 4:pos + 6]
            if vr in _LONG_VRS:
                at, size, header = pos + 8, 4, 12
            else:
                at, size, header = pos + 6, 2, 8
        else:
            at, size, header = pos + 4, 4, 8
        if at + size > len(data):
            break
        length = int.from_bytes(data[at:at + size], "little")
        out.append(Element(pos, header, at, size, length))
        if length == 0xFFFFFFFF:  # undefined length (a sequence or encapsulated pixels)
            break
        pos += header + length
    return out


@cache
def seeds() -> tuple[tuple[str, bytes, bool], ...]:
    """(name, bytes, implicit VR) of valid CT objects, 32² to keep the examples fast."""
    ge = make_series("fuzz-study", "fuzz-ge", SeriesSpec(n=3, matrix=32, profile=GE))
    signed = make_series("fuzz-study", "fuzz-signed", SeriesSpec(n=3, matrix=32,
                                                                 profile=SIGNED))
    enhanced = as_enhanced(make_series("fuzz-study", "fuzz-enh", SeriesSpec(n=3, matrix=32)))
    rle = make_series("fuzz-study", "fuzz-rle", SeriesSpec(n=1, matrix=32))[0]
    rle.compress("1.2.840.10008.1.2.5")  # RLE Lossless, encapsulated pixel data
    return (
        ("explicit", to_bytes(ge[1]), False),
        ("implicit", to_bytes(signed[1]), True),
        ("enhanced", to_bytes(enhanced), False),
        ("rle", to_bytes(rle), False),
    )


# ---------------------------------------------------------------------------------------------
# mutations


def _flip(data: bytearray, draw) -> None:
    if data:
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] ^= 1 << draw(st.integers(0, 7))


def _truncate(data: bytearray, draw) -> None:
    del data[draw(st.integers(0, len(data))):]


def _set_length(data: bytearray, draw, elems: list[Element]) -> None:
    if not elems:
        return
    e = draw(st.sampled_from(elems))
    top = (1 << (8 * e.length_size)) - 1
    value = draw(st.sampled_from([0, 1, 3, e.length + 1, e.length * 2 + 7, 0x7FFF, top,
                                  top - 1, top // 2]))
    value = min(value, top)
    if e.length_at + e.length_size <= len(data):
        data[e.length_at:e.length_at + e.length_size] = value.to_bytes(e.length_size, "little")


def _garbage_element(draw) -> bytes:
    group = draw(st.sampled_from([0x0008, 0x0010, 0x0018, 0x0020, 0x0028, 0x0009, 0x7FE0,
                                  0xFFFE, 0x0002, 0xFFFF]))
    elem = draw(st.sampled_from([0x0010, 0x0018, 0x0020, 0x0032, 0x0037, 0x1052, 0xE000,
                                 0xE00D, 0xE0DD, 0x0000, 0xFFFF]))
    vr = draw(st.sampled_from([b"DS", b"UI", b"SQ", b"OB", b"US", b"IS", b"PN", b"\x00\x00",
                               b"ZZ", b"UN"]))
    value = draw(st.binary(max_size=64))
    if vr in _LONG_VRS:
        length = draw(st.sampled_from([len(value), 0xFFFFFFFF, len(value) + 1000]))
        return struct.pack("<HH2sHI", group, elem, vr, 0, length) + value
    length = draw(st.sampled_from([len(value), len(value) + 3, 0xFFFF]))
    return struct.pack("<HH2sH", group, elem, vr, length) + value


def _nested_sequences(depth: int) -> bytes:
    """A (0008,1115) sequence of undefined length nested ``depth`` deep: recursion in any
    parser that descends into sequences."""
    head = struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    end_item = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    end_seq = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return (head + item) * depth + (end_item + end_seq) * depth


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    """A seed object with 1-4 structural mutations; returns (description, bytes)."""
    name, seed, implicit = draw(st.sampled_from(seeds()))
    data = bytearray(seed)
    ops = draw(st.lists(st.sampled_from(["flip", "truncate", "length", "insert", "duplicate",
                                         "nest"]), min_size=1, max_size=4))
    for op in ops:
        elems = [e for e in elements(bytes(data), implicit=implicit) if e.offset < len(data)]
        if op == "flip":
            for _ in range(draw(st.integers(1, 16))):
                _flip(data, draw)
        elif op == "truncate":
            _truncate(data, draw)
        elif op == "length":
            _set_length(data, draw, elems)
        elif elems:
            at = draw(st.sampled_from(elems))
            if op == "insert":
                blob = _garbage_element(draw)
            elif op == "duplicate":
                blob = bytes(data[at.offset:at.offset + at.header + min(at.length, 256)])
            else:
                blob = _nested_sequences(draw(st.sampled_from([2, 50, 400, 1500])))
            data[at.offset:at.offset] = blob
    return f"{name}:{'+'.join(ops)}", bytes(data)


# ---------------------------------------------------------------------------------------------
# properties of read_header


class _Fetch:
    def __init__(self, data: bytes) -> None:
        self.data, self.calls = data, 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.data


def _event(name: str) -> None:
    from hypothesis.control import _current_build_context

    if _current_build_context.value is not None:  # statistics only inside a hypothesis test
        event(name)


def _check(data: bytes, prefix: int) -> SliceHeader | UnreadableObject:
    fetch = _Fetch(data)
    ref = ObjectRef("fuzz/object.dcm", "etag-1", len(data))
    out = read_header(ref, data[:prefix], fetch)  # must not raise: no try/except here
    assert fetch.calls <= 1
    assert (out.key, out.etag, out.size) == (ref.key, ref.etag, ref.size)
    if isinstance(out, UnreadableObject):
        assert out.reason == Reason.UNREADABLE
        assert not any(p in out.detail for p in PHI), out.detail
        _event("unreadable")
    else:
        assert isinstance(out, SliceHeader)
        assert out.study_uid and out.series_uid and out.sop_uid
        _event("header")
    return out


def test_the_seeds_are_valid_headers_so_the_mutations_start_from_real_objects() -> None:
    for name, data, implicit in seeds():
        out = _check(data, HEADER_BYTES)
        assert isinstance(out, SliceHeader), (name, out)
        assert out.modality == "CT" and out.rows == 32
        assert len(elements(data, implicit=implicit)) > 20, name


@FUZZ
@given(data=st.binary(max_size=4096), prefix=st.integers(0, HEADER_BYTES))
def test_random_bytes_are_unreadable_never_an_exception(data: bytes, prefix: int) -> None:
    assert isinstance(_check(data, prefix), UnreadableObject)


@FUZZ
@given(body=st.binary(max_size=4096), prefix=st.integers(0, HEADER_BYTES))
def test_random_bytes_behind_a_dicom_preamble_never_raise(body: bytes, prefix: int) -> None:
    _check(b"\x00" * 128 + b"DICM" + body, prefix)


@FUZZ
@given(case=mutated(), prefix=st.sampled_from([HEADER_BYTES, 64, 300, 1024, 4096]))
def test_mutated_ct_objects_get_a_header_or_a_reason(case: tuple[str, bytes],
                                                     prefix: int) -> None:
    name, data = case
    event(name.split(":")[0])
    _check(data, prefix)


# ---------------------------------------------------------------------------------------------
# the whole validator over a folder


@cache
def good_series() -> tuple[bytes, ...]:
    """A valid 12-slice series (64², 5 mm) that passes validation on its own."""
    return tuple(to_bytes(ds) for ds in make_series("fuzz-good", "fuzz-good-ax",
                                                    SeriesSpec(n=12, matrix=64, profile=GE)))


@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(bad=st.lists(mutated(), min_size=2, max_size=5),
       noise=st.lists(st.binary(max_size=600), max_size=2),
       damage=st.lists(st.tuples(st.integers(0, 11), st.sampled_from(["cut", "flip"])),
                       max_size=2))
def test_validate_source_accounts_for_every_object_of_a_hostile_folder(
    bad: list[tuple[str, bytes]], noise: list[bytes], damage: list[tuple[int, str]],
) -> None:
    from bloodnet_ops.pipeline import validate_source

    series = [bytearray(b) for b in good_series()]
    for i, how in damage:  # some slices of the good series are damaged too
        if how == "cut":
            del series[i][len(series[i]) * 2 // 3:]
        else:
            series[i][len(series[i]) // 2] ^= 0xFF
    with tempfile.TemporaryDirectory(prefix="bloodnet-fuzz-") as tmp:
        root = Path(tmp)
        for i, blob in enumerate(series):
            (root / "good").mkdir(exist_ok=True)
            (root / "good" / f"{i:02d}.dcm").write_bytes(bytes(blob))
        for i, (_, blob) in enumerate(bad):
            (root / f"bad-{i}.dcm").write_bytes(blob)
        for i, blob in enumerate(noise):
            (root / f"noise-{i}").write_bytes(blob)
        report = validate_source(LocalSource(root), workers=2)

    listed = {o.key for o in report.objects}
    in_studies = [k for s in report.studies for k in s.keys]
    unreadable = [u.key for u in report.unreadable]
    assert len(listed) == len(series) + len(bad) + len(noise)
    assert sorted(in_studies + unreadable) == sorted(listed)  # each exactly once
    for s in report.studies:
        assert s.verdict in set(Verdict)
        assert all(isinstance(r, Reason) for r in s.reasons)
        if s.verdict == Verdict.REJECT:
            assert s.reasons and verdict_for(s.reasons) == Verdict.REJECT
    for u in report.unreadable:
        assert u.reason == Reason.UNREADABLE
    if not damage:
        (good,) = [s for s in report.studies if "good/00.dcm" in s.keys]
        assert good.verdict != Verdict.REJECT, good.reasons  # mutants do not spoil a good series
        event("good series accepted")


# ---------------------------------------------------------------------------------------------
# coverage-guided: atheris


def test_atheris_coverage_guided_run_finds_no_crash(tmp_path: Path) -> None:
    """libFuzzer for a fixed budget of inputs, seeded with the valid objects above: any
    exception or failed property in ``fuzz/fuzz_headers.py`` is a crash and fails the run."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data, _ in seeds():
        (corpus / f"{name}.dcm").write_bytes(data)
    res = subprocess.run(
        [sys.executable, str(REPO / "fuzz" / "fuzz_headers.py"), str(corpus), "-runs=2000",
         "-seed=7", "-max_len=24000", "-timeout=20", "-rss_limit_mb=2048",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path,
    )
    tail = res.stderr[-4000:]
    assert res.returncode == 0, tail
    assert "Done 2000 runs" in res.stderr, tail
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
    done = re.search(r"DONE\s+cov: (\d+)", res.stderr)
    assert done and int(done.group(1)) > 300, tail  # edges in pydicom and bloodnet_ops
