"""Plotly figure specifications built as plain dicts.

The figures are serialised into the page as JSON and drawn by the locally served ``plotly.min.js``
(no CDN: the hospital network is closed). Building dicts instead of ``plotly.graph_objects`` keeps a
page with thousands of points fast: no per-property validation, no 1 s import.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

Figure = dict[str, Any]


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null (``JSON.parse`` rejects them), dates become ISO text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Decimal):
        return _clean(float(value))
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def figure_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` for figures embedded in a page (Jinja's ``tojson`` then HTML-escapes it)."""
    return json.dumps(_clean(value), separators=(",", ":"), **kwargs)

_BASE_LAYOUT: dict[str, Any] = {
    "margin": {"l": 56, "r": 16, "t": 36, "b": 48},
    "height": 320,
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "legend": {"orientation": "h", "y": -0.2},
    "hovermode": "closest",
    "paper_bgcolor": "rgba(0,0,0,0)",
}


@dataclass(frozen=True)
class Series:
    """One named line or bar series; ``x`` and ``y`` have equal length."""

    name: str
    x: Sequence[Any]
    y: Sequence[float | None]
    error_low: Sequence[float | None] | None = None
    error_high: Sequence[float | None] | None = None
    text: Sequence[str] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def _layout(title: str, *, x_title: str = "", y_title: str = "", **more: Any) -> dict[str, Any]:
    layout = dict(_BASE_LAYOUT)
    layout["title"] = {"text": title, "x": 0, "font": {"size": 14}}
    layout["xaxis"] = {"title": {"text": x_title}, "automargin": True}
    layout["yaxis"] = {"title": {"text": y_title}, "automargin": True}
    layout.update(more)
    return layout


def _error(series: Series) -> dict[str, Any] | None:
    if series.error_low is None or series.error_high is None:
        return None
    plus = [None if h is None or y is None else h - y for y, h in zip(series.y, series.error_high)]
    minus = [None if lo is None or y is None else y - lo for y, lo in zip(series.y, series.error_low)]
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "visible": True}


def line_chart(
    title: str,
    series: Iterable[Series],
    *,
    x_title: str = "",
    y_title: str = "",
    y_range: tuple[float, float] | None = None,
    thresholds: Iterable[tuple[str, float]] = (),
    markers: Iterable[Series] = (),
) -> Figure:
    """Lines with markers (one per series), optional horizontal thresholds and marker overlays.

    ``thresholds`` are ``(label, y)`` dashed lines; ``markers`` are drawn as large red symbols only
    (alert markers on drift charts).
    """
    data: list[dict[str, Any]] = []
    for s in series:
        trace: dict[str, Any] = {
            "type": "scatter",
            "mode": "lines+markers",
            "name": s.name,
            "x": list(s.x),
            "y": list(s.y),
            "marker": {"size": 5},
        }
        if (err := _error(s)) is not None:
            trace["error_y"] = err
        if s.text is not None:
            trace["text"] = list(s.text)
        trace.update(s.extra)
        data.append(trace)
    for m in markers:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": m.name,
                "x": list(m.x),
                "y": list(m.y),
                "text": list(m.text) if m.text is not None else None,
                "marker": {"symbol": "x", "size": 12, "color": "#c62828", "line": {"width": 2}},
            }
        )
    shapes = []
    annotations = []
    for label, y in thresholds:
        shapes.append(
            {
                "type": "line",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "y0": y,
                "y1": y,
                "line": {"dash": "dash", "color": "#c62828", "width": 1},
            }
        )
        annotations.append(
            {"xref": "paper", "x": 1, "y": y, "text": label, "showarrow": False, "yanchor": "bottom",
             "xanchor": "right", "font": {"color": "#c62828", "size": 10}}
        )
    layout = _layout(title, x_title=x_title, y_title=y_title, shapes=shapes, annotations=annotations)
    if y_range is not None:
        layout["yaxis"]["range"] = list(y_range)
    return {"data": data, "layout": layout}


def bar_chart(
    title: str,
    series: Iterable[Series],
    *,
    x_title: str = "",
    y_title: str = "",
    stacked: bool = False,
    horizontal: bool = False,
) -> Figure:
    """Grouped (or stacked) bars, one colour per series."""
    data = []
    for s in series:
        trace: dict[str, Any] = {"type": "bar", "name": s.name}
        if horizontal:
            trace.update({"x": list(s.y), "y": list(s.x), "orientation": "h"})
        else:
            trace.update({"x": list(s.x), "y": list(s.y)})
        if (err := _error(s)) is not None:
            trace["error_y"] = err
        trace.update(s.extra)
        data.append(trace)
    layout = _layout(title, x_title=x_title, y_title=y_title, barmode="stack" if stacked else "group")
    if horizontal:
        layout["legend"] = {"orientation": "h", "y": -0.3}
    return {"data": data, "layout": layout}


def group_series(
    rows: Iterable[Mapping[str, Any]], *, key: str, x: str, y: str
) -> list[Series]:
    """Split rows into one ``Series`` per distinct ``key`` value, keeping row order inside each."""
    grouped: dict[str, tuple[list[Any], list[Any]]] = {}
    for row in rows:
        xs, ys = grouped.setdefault(str(row[key]), ([], []))
        xs.append(row[x])
        ys.append(None if row[y] is None else float(row[y]))
    return [Series(name=name, x=xs, y=ys) for name, (xs, ys) in grouped.items()]
