"""Compact :class:`SliceHeader` values: shared where they repeat, flat tuples for spilling."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from bloodnet_ops.records import SliceHeader

# A night holds one SliceHeader per object until its study is validated. Most of their values
# repeat across the instances of a series (UIDs, vendor strings, orientation, spacing, rescale),
# so they are shared rather than stored once per instance: strings through ``sys.intern``,
# small tuples and floats through a bounded table. Only the key, SOP UID and position stay
# per instance.

_SHARED: dict[Any, Any] = {}
_SHARED_MAX = 1 << 16  #: distinct tuples/floats kept; beyond that the table starts again


def share(value: Any) -> Any:
    """One shared instance per distinct string, float, int or tuple value."""
    if type(value) is str:
        return sys.intern(value)
    if type(value) not in (float, int, tuple):
        return value  # None, bool, bytes, anything odd
    if len(_SHARED) >= _SHARED_MAX:
        _SHARED.clear()  # only sharing is lost; values stay correct
    return _SHARED.setdefault(value, value)


#: SliceHeader fields whose values are unique per instance: never put in the shared table.
_PER_INSTANCE = frozenset({"key", "etag", "size", "sop_uid", "position", "instance_number",
                           "frame_positions"})
HEADER_FIELDS = tuple(f.name for f in dataclasses.fields(SliceHeader))
_SHARE_AT = tuple(i for i, f in enumerate(HEADER_FIELDS) if f not in _PER_INSTANCE)


def header_values(h: SliceHeader) -> tuple:
    """The field values of ``h`` in :data:`HEADER_FIELDS` order (for spilling to disk)."""
    return tuple(getattr(h, f) for f in HEADER_FIELDS)


def header_from_values(values: Sequence[Any]) -> SliceHeader:
    """A :class:`SliceHeader` from :func:`header_values`, its repeated values shared again."""
    vals = list(values)
    for i in _SHARE_AT:
        vals[i] = share(vals[i])
    return SliceHeader(*vals)


def compact(h: SliceHeader) -> SliceHeader:
    """``h`` with its repeated values shared (:func:`share`)."""
    return header_from_values(header_values(h))
