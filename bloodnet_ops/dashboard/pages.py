"""What each page shows: queries from :mod:`queries` turned into template context and figures.

A function per page takes an open connection and the parsed request parameters and returns the
template context. Routes stay one line; the templates only lay out what is computed here.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.engine import Connection

from bloodnet_ops.dashboard import ablation
from bloodnet_ops.dashboard.charts import (
    Series,
    bar_chart,
    group_columns,
    group_series,
    line_chart,
)
from bloodnet_ops.db import dashboard as queries
from bloodnet_ops.db.models_audit import ADJUDICATION_OUTCOMES, AUDIT_KINDS
from bloodnet_ops.reasons import DESCRIPTIONS

QUALITY_DEFAULT_NIGHTS = 90
AUDIT_METRICS = ("sensitivity", "specificity", "auc")
METRIC_LABELS = {"sensitivity": "Sensitivity", "specificity": "Specificity", "auc": "AUC"}
OBSERVED_MAX_CHARS = 160


def _window(
    conn: Connection, start: dt.date | None, end: dt.date | None, nights: int
) -> tuple[dt.date, dt.date]:
    """Fill a missing end with the newest night in the data and a missing start ``nights`` back."""
    if end is None:
        end = queries.latest_night(conn) or dt.datetime.now(dt.UTC).date()
    if start is None:
        start = end - dt.timedelta(days=nights - 1)
    if start > end:
        start, end = end, start
    return start, end


def _link(target: str, **params: Any) -> str:
    """A relative link with its query string (values URL-encoded, ``None`` dropped)."""
    query = {k: str(v) for k, v in params.items() if v is not None and v != ""}
    return target + ("?" + urlencode(query) if query else "")


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or not den:
        return None
    return float(num) / float(den)


def _compact(value: Any) -> str:
    """An observed value as short JSON text for a table cell (the template escapes it)."""
    out = json.dumps(value, default=str, separators=(",", ":"))
    return out if len(out) <= OBSERVED_MAX_CHARS else out[: OBSERVED_MAX_CHARS - 1] + "…"


# ---------------------------------------------------------------- overview
def overview(conn: Connection, *, days: int) -> dict[str, Any]:
    start, end = _window(conn, None, None, days)
    rollup = queries.overview_rollup(conn, start, end)
    nights = [r for r in rollup if r["level"] == "night"]
    totals = [r for r in rollup if r["level"] == "site"]
    runs = queries.recent_runs(conn)
    latest = nights[-1] if nights else None
    for row in totals:
        row["positive_rate"] = _ratio(row["positives"], row["scored"])
        row["reject_rate"] = _ratio(row["rejected"], row["studies"])

    def per_site(column: str) -> list[Series]:
        return [Series(r["site"], r["nights"], r[column]) for r in totals]

    charts = {
        "studies": bar_chart(
            "Studies screened per night, by site",
            per_site("night_studies"),
            y_title="studies",
            stacked=True,
        ),
        "positives": line_chart(
            "ICH-positive studies per night, by site",
            per_site("night_positives"),
            y_title="positives",
        ),
        "rejects": bar_chart(
            "Rejected studies per night, by site",
            per_site("night_rejected"),
            y_title="rejected",
            stacked=True,
        ),
        "timing": line_chart(
            "Median time per study (load + inference)",
            [Series("all sites", [n["night"] for n in nights], [n["median_seconds"] for n in nights])],
            y_title="seconds",
        ),
    }
    return {
        "title": "Overview",
        "start": start,
        "end": end,
        "days": days,
        "latest": latest,
        "last_run": runs[0] if runs else None,
        "runs": runs,
        "totals": totals,
        "charts": charts,
    }


# ---------------------------------------------------------------- data quality
def quality(
    conn: Connection, *, site: str | None, start: dt.date | None, end: dt.date | None
) -> dict[str, Any]:
    start, end = _window(conn, start, end, QUALITY_DEFAULT_NIGHTS)
    rates = queries.quality_by_site(conn, start, end, site)
    reasons = queries.rejects_by_reason(conn, start, end, site)
    hu = queries.hu_trends(conn, start, end, site)
    reject_nights = queries.reject_nights(conn, start, end, site)
    for row in reject_nights:
        row["link"] = _link("rejects", night=row["night"], site=row["site"])
    failed = queries.failed_expectations(conn, start, end, site)
    for row in failed:
        row["observed_text"] = _compact(row["observed"])
    reason_kinds = sorted({r["kind"] for r in reasons})
    rate_series = group_columns(
        rates, key="site", x="night", ys=("pass_rate", "warn_rate", "reject_rate")
    )
    hu_series = group_columns(hu, key="site", x="night", ys=("air_peak", "brain_median"))
    charts = {
        f"{name}_rate": line_chart(
            f"{label} rate per night, by site",
            rate_series[f"{name}_rate"],
            y_title="fraction of studies",
            y_range=(0, 1) if name == "pass" else None,
        )
        for name, label in (("pass", "Pass"), ("warn", "Warning"), ("reject", "Reject"))
    }
    charts["reasons"] = bar_chart(
        "Rejections by reason code",
        [
            Series(
                "unreadable objects" if kind == "object" else "rejected studies",
                [r["reason"] for r in reasons if r["kind"] == kind],
                [r["n"] for r in reasons if r["kind"] == kind],
            )
            for kind in reason_kinds
        ],
        x_title="count",
        stacked=True,
        horizontal=True,
    )
    charts["hu_air"] = line_chart(
        "Air peak per night (HU), by site",
        hu_series["air_peak"],
        y_title="HU",
        thresholds=[("expected air −1000 HU", -1000.0)],
    )
    charts["hu_brain"] = line_chart(
        "Brain median per night (HU), by site",
        hu_series["brain_median"],
        y_title="HU",
    )
    return {
        "title": "Data quality",
        "site": site,
        "sites": queries.sites(conn),
        "start": start,
        "end": end,
        "reasons": reasons,
        "descriptions": {reason.value: text for reason, text in DESCRIPTIONS.items()},
        "reason_total": sum(r["n"] for r in reasons),
        "reject_nights": reject_nights,
        "expectation_summary": queries.failed_expectation_summary(conn, start, end, site),
        "failed": failed,
        "charts": charts,
    }


def rejects(conn: Connection, *, night: dt.date, site: str | None) -> dict[str, Any]:
    items = queries.night_quarantine(conn, night, site)
    expectations = queries.night_failed_expectations(conn, night, site)
    for row in expectations:
        row["observed_text"] = _compact(row["observed"])
    return {
        "title": f"Rejected on {night.isoformat()}" + (f" at {site}" if site else ""),
        "night": night,
        "site": site,
        "items": items,
        "studies": sum(1 for i in items if i["kind"] == "study"),
        "objects": sum(1 for i in items if i["kind"] == "object"),
        "expectations": expectations,
        "back": _link("quality", site=site),
    }


# ---------------------------------------------------------------- audit
@dataclass(frozen=True)
class WorklistFilters:
    """The audit page's query parameters."""

    site: str | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    kind: str | None = None
    status: str | None = None
    sort: str = "exam_date"
    direction: str = "desc"
    page: int = 1
    per_page: int = 25

    def params(self, **changes: Any) -> dict[str, Any]:
        f = replace(self, **changes)
        return {
            "site": f.site,
            "start": f.start,
            "end": f.end,
            "kind": f.kind,
            "status": f.status,
            "sort": f.sort,
            "direction": f.direction,
            "page": f.page if f.page != 1 else None,
            "per_page": f.per_page if f.per_page != 25 else None,
        }

    def page_link(self, page: int) -> str:
        return _link("audit", **self.params(page=page))

    def sort_link(self, column: str) -> str:
        direction = "asc" if self.sort == column and self.direction == "desc" else "desc"
        return _link("audit", **self.params(sort=column, direction=direction, page=1))


def audit(conn: Connection, filters: WorklistFilters) -> dict[str, Any]:
    sort = filters.sort if filters.sort in queries.WORKLIST_SORTS else "exam_date"
    filters = replace(filters, sort=sort)
    rows, total = queries.worklist(
        conn,
        queries.WorklistQuery(
            site=filters.site,
            start=filters.start,
            end=filters.end,
            kind=filters.kind,
            status=filters.status,
            sort=sort,
            direction=filters.direction,
            limit=filters.per_page,
            offset=(filters.page - 1) * filters.per_page,
        ),
    )
    pages = max(1, math.ceil(total / filters.per_page))
    latest = queries.latest_audit_metrics(conn, AUDIT_METRICS)
    trend = queries.audit_metric_trend(conn, AUDIT_METRICS, filters.site)
    charts = {
        "latest": bar_chart(
            "Latest audit: sensitivity, specificity and AUC per site (95 % CI)",
            [
                Series(
                    METRIC_LABELS[metric],
                    [r["site"] for r in latest if r["metric"] == metric],
                    [r["value"] for r in latest if r["metric"] == metric],
                    error_low=[r["ci_lo"] for r in latest if r["metric"] == metric],
                    error_high=[r["ci_hi"] for r in latest if r["metric"] == metric],
                )
                for metric in AUDIT_METRICS
            ],
            y_title="value",
        )
    }
    for metric in AUDIT_METRICS:
        charts[f"trend_{metric}"] = line_chart(
            f"{METRIC_LABELS[metric]} over audit runs (95 % CI)",
            [
                Series(
                    r["site"],
                    r["audited_at"],
                    r["value"],
                    error_low=r["ci_lo"],
                    error_high=r["ci_hi"],
                )
                for r in trend
                if r["metric"] == metric
            ],
            y_title=METRIC_LABELS[metric],
            y_range=(0, 1.02),
        )
    return {
        "title": "Audit",
        "filters": filters,
        "sites": queries.sites(conn),
        "kinds": AUDIT_KINDS,
        "statuses": ("pending", *ADJUDICATION_OUTCOMES),
        "rows": rows,
        "total": total,
        "pages": pages,
        "latest": latest,
        "charts": charts,
    }


# ---------------------------------------------------------------- drift
def drift(conn: Connection, *, site: str | None, metric: str | None) -> dict[str, Any]:
    everything = queries.drift_current(conn)
    keys = sorted({c["metric_key"] for c in everything})
    current = sorted(
        (c for c in everything if c["status"] != "ok" and site in (None, c["site"])),
        key=lambda c: (c["status"] != "alert", c["site"], c["metric_key"]),
    )
    counts: dict[str, dict[str, int]] = {}
    for c in everything:
        per_site = counts.setdefault(c["site"], {"ok": 0, "warn": 0, "alert": 0})
        per_site[c["status"]] = per_site.get(c["status"], 0) + 1
    if metric not in keys:
        # Default to the statistic with the most recent alert, else the first one.
        alerted = [c["metric_key"] for c in current if c["status"] == "alert"]
        metric = alerted[0] if alerted else (keys[0] if keys else None)
    charts: dict[str, Any] = {}
    if metric is not None:
        per_site = queries.drift_series(conn, metric, site)
        alerted = [r for r in per_site if r["alert_at"]]
        # The thresholds of the newest point (the last site of the newest run).
        last = max(per_site, key=lambda r: (r["last_run_at"], r["site"]), default=None)
        thresholds = []
        if last is not None:
            thresholds = [("warn", last["threshold_warn"]), ("alert", last["threshold_alert"])]
        charts["series"] = line_chart(
            f"{metric} per site over drift runs",
            [Series(r["site"], r["run_at"], r["value"]) for r in per_site],
            y_title="statistic",
            thresholds=thresholds,
            markers=[
                Series(
                    "alert",
                    [at for r in alerted for at in r["alert_at"]],
                    [v for r in alerted for v in r["alert_value"]],
                    text=[r["site"] for r in alerted for _ in r["alert_at"]],
                )
            ]
            if alerted
            else [],
        )
    return {
        "title": "Drift",
        "site": site,
        "sites": queries.sites(conn),
        "metric": metric,
        "metric_keys": keys,
        "current": current,
        "recent_alerts": queries.recent_drift_alerts(conn, site),
        "status_counts": [{"site": s, **n} for s, n in sorted(counts.items())],
        "charts": charts,
    }


# ---------------------------------------------------------------- models
def models(conn: Connection, *, reports_dir: Path) -> dict[str, Any]:
    versions = queries.model_versions(conn)
    for v in versions:
        v["metric_items"] = ablation.flatten(v["metrics"] or {})
    per_night = queries.model_usage(conn)
    summary: dict[str, dict[str, Any]] = {}
    for row in per_night:
        u = summary.setdefault(row["model_version"], {
            "model_version": row["model_version"], "first_night": row["night"],
            "last_night": row["night"], "nights": 0, "findings": 0, "positives": 0})
        u["first_night"] = min(u["first_night"], row["night"])
        u["last_night"] = max(u["last_night"], row["night"])
        u["nights"] += 1
        u["findings"] += row["findings"]
        u["positives"] += row["positives"]
    usage = sorted(summary.values(), key=lambda u: (u["first_night"], u["model_version"]))
    charts: dict[str, Any] = {}
    if usage:
        charts["usage"] = bar_chart(
            "Findings per night, by the model version that scored them",
            group_series(per_night, key="model_version", x="night", y="findings"),
            y_title="findings",
            stacked=True,
        )
    return {
        "title": "Models",
        "versions": versions,
        "usage": usage,
        "ablation": ablation.load_reports(reports_dir / "ablation"),
        "charts": charts,
    }
