"""Parsed headers of a night, grouped by study, spilled to sealed temporary files when large."""

from __future__ import annotations

import marshal
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Self

from bloodnet_ops.header_values import header_from_values, header_values
from bloodnet_ops.records import SliceHeader, UnreadableObject


class HeaderPartitions:
    """Parsed headers grouped by study: in memory when there is one partition, else in
    temporary files chosen by a hash of the study UID.

    Headers carry PHI (PatientID, accession, descriptions), which must not rest on the worker's
    disk readable: each spilled block is ``marshal`` (plain values only, nothing executable)
    sealed with AES-GCM under a key that exists only in this object's memory, so files left by
    a killed process are noise. The folder is private (``mkdtemp``: mode 0700) and removed on
    exit."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.study_uids: set[str] = set()
        self._memory: list[SliceHeader] = []
        self._dir: Path | None = None
        self._aead: Any = None

    def __enter__(self) -> Self:
        if self.n > 1:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
            self._dir = Path(tempfile.mkdtemp(prefix="bloodnet-headers-"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._aead = None

    def _path(self, i: int) -> Path:
        assert self._dir is not None
        return self._dir / f"part-{i:05d}.bin"

    def add(self, parsed: Iterable[SliceHeader | UnreadableObject]) -> list[UnreadableObject]:
        """File the headers; return the unreadable objects."""
        bad: list[UnreadableObject] = []
        spill: dict[int, list[tuple]] = {}
        for p in parsed:
            if isinstance(p, UnreadableObject):
                bad.append(p)
                continue
            self.study_uids.add(p.study_uid)
            if self.n == 1:
                self._memory.append(p)
            else:
                i = zlib.crc32(p.study_uid.encode("utf-8", "surrogatepass")) % self.n
                spill.setdefault(i, []).append(header_values(p))
        for i, rows in spill.items():
            nonce = os.urandom(12)
            sealed = self._aead.encrypt(nonce, marshal.dumps(rows), None)
            with open(self._path(i), "ab") as fh:
                fh.write(len(sealed).to_bytes(8, "little") + nonce + sealed)
        return bad

    def drain(self) -> Iterator[list[SliceHeader]]:
        """Each partition's headers, once; a spilled partition's file is removed as it is read."""
        if self.n == 1:
            headers, self._memory = self._memory, []
            if headers:
                yield headers
            return
        for i in range(self.n):
            path = self._path(i)
            if not path.exists():
                continue
            headers = []
            with open(path, "rb") as fh:
                while head := fh.read(8):
                    size = int.from_bytes(head, "little")
                    nonce, sealed = fh.read(12), fh.read(size)
                    rows = marshal.loads(self._aead.decrypt(nonce, sealed, None))
                    headers.extend(header_from_values(r) for r in rows)
            path.unlink()
            yield headers
