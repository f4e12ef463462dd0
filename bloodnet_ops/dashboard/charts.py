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


_PLAIN = frozenset({str, int, bool, type(None)})


def _clean(value: Any, dates: dict[Any, str] | None = None) -> Any:
    """JSON-safe copy: NaN/inf become null (``JSON.parse`` rejects them), dates become ISO text.

    Dispatches on the exact type, with a fast path for the long lists of numbers and dates that a
    year of nights puts in a figure (tens of thousands of points over a few hundred distinct
    dates, hence the ``dates`` memo).
    """
    if dates is None:
        dates = {}
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind in _PLAIN:
        return value
    if kind is list or kind is tuple:
        out = list(value)
        for i, item in enumerate(out):
            item_kind = type(item)
            if item_kind is float:
                if not math.isfinite(item):
                    out[i] = None
            elif item_kind is dt.date or item_kind is dt.datetime:
                text = dates.get(item)
                if text is None:
                    text = dates[item] = _clean(item, dates)
                out[i] = text
            elif item_kind not in _PLAIN:
                out[i] = _clean(item, dates)
        return out
    if isinstance(value, dict):
        return {k: _clean(v, dates) for k, v in value.items()}
    if isinstance(value, float | Decimal):  # float subclasses (numpy.float64) and NUMERIC
        return _clean(float(value), dates)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return _clean(list(value), dates)
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


def group_columns(
    rows: Iterable[Mapping[str, Any]], *, key: str, x: str, ys: Sequence[str]
) -> dict[str, list[Series]]:
    """For each column in ``ys``, one ``Series`` per distinct ``key`` value (row order kept),
    in a single pass: a year of nights for 20 sites is thousands of rows per chart."""
    xs: dict[str, list[Any]] = {}
    values: dict[str, list[list[Any]]] = {}
    for row in rows:
        name = str(row[key])
        column = values.get(name)
        if column is None:
            xs[name], column = [], [[] for _ in ys]
            values[name] = column
        xs[name].append(row[x])
        for out, y in zip(column, ys, strict=True):
            v = row[y]
            out.append(None if v is None else float(v))
    return {
        y: [Series(name=name, x=xs[name], y=values[name][i]) for name in xs]
        for i, y in enumerate(ys)
    }


def group_series(
    rows: Iterable[Mapping[str, Any]], *, key: str, x: str, y: str
) -> list[Series]:
    """Split rows into one ``Series`` per distinct ``key`` value, keeping row order inside each."""
    return group_columns(rows, key=key, x=x, ys=(y,))[y]
