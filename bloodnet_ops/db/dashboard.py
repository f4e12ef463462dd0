"""SQL behind the dashboard pages. Every query reads the views of ``sql/views.sql``.

Values are always bound parameters. The only text composed into SQL is an ``ORDER BY`` column and
direction picked from the fixed whitelists below, never from the request itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

Row = dict[str, Any]


def _rows(conn: Connection, sql: str, **params: Any) -> list[Row]:
    result = conn.execute(text(sql), params)
    keys = list(result.keys())
    # zip over plain tuples: building each dict through a RowMapping costs ~5x more, which
    # shows on the year-long overview (7,000+ rows).
    return [dict(zip(keys, row, strict=True)) for row in result.fetchall()]


# ---------------------------------------------------------------- common
def latest_night(conn: Connection) -> dt.date | None:
    """The newest night with data: the anchor of every default date window.

    Read from the base tables' indexed timestamps rather than the aggregate views, so it costs an
    index probe, not a scan.
    """
    return conn.execute(
        text(
            "SELECT (GREATEST((SELECT max(started_at) FROM inference_runs),"
            " (SELECT max(validated_at) FROM validation_results)) AT TIME ZONE 'UTC')::date"
        )
    ).scalar_one_or_none()


def sites(conn: Connection) -> list[str]:
    return list(conn.execute(text("SELECT site FROM sites ORDER BY site")).scalars())


# ---------------------------------------------------------------- overview
def overview_rollup(conn: Connection, start: dt.date, end: dt.date) -> list[Row]:
    """The overview's figures, from the per-run rollups, at two levels.

    ``level = 'site'``: one row per site over the whole window, with its nights' figures as
    arrays ordered by night (``nights``, ``night_studies``, ``night_positives``,
    ``night_rejected``) for the charts; ``level = 'night'``: one row per night, all sites.
    Verdict counts come from the validation results and scored/positives from the findings, each
    on its own (one pass over both rollups, no join between them). Medians are over studies,
    never medians of medians: a lookup in the run's sorted times per night, and
    ``bloodnet_site_medians`` per site.
    """
    return _rows(
        conn,
        """
        WITH ns AS MATERIALIZED (
            SELECT night, site, sum(studies) AS studies, sum(accepted) AS accepted,
                   sum(warned) AS warned, sum(rejected) AS rejected, sum(scored) AS scored,
                   sum(positives) AS positives
            FROM (SELECT night, site, studies, accepted, warned, rejected,
                         0 AS scored, 0 AS positives
                  FROM v_validation_rollup WHERE night BETWEEN :start AND :end
                  UNION ALL
                  SELECT night, site, 0, 0, 0, 0, scored, positives
                  FROM v_finding_rollup WHERE night BETWEEN :start AND :end) AS u
            GROUP BY night, site)
        SELECT 'site' AS level, NULL::date AS night, ns.site, sum(ns.studies)::bigint AS studies,
               sum(ns.accepted)::bigint AS accepted, sum(ns.warned)::bigint AS warned,
               sum(ns.rejected)::bigint AS rejected, sum(ns.scored)::bigint AS scored,
               sum(ns.positives)::bigint AS positives, min(m.median_seconds) AS median_seconds,
               array_agg(ns.night ORDER BY ns.night) AS nights,
               array_agg(ns.studies::bigint ORDER BY ns.night) AS night_studies,
               array_agg(ns.positives::bigint ORDER BY ns.night) AS night_positives,
               array_agg(ns.rejected::bigint ORDER BY ns.night) AS night_rejected
        FROM ns LEFT JOIN bloodnet_site_medians(:start, :end) m ON m.site = ns.site
        GROUP BY ns.site
        UNION ALL
        SELECT 'night', ns.night, NULL, sum(ns.studies)::bigint, sum(ns.accepted)::bigint,
               sum(ns.warned)::bigint, sum(ns.rejected)::bigint, sum(ns.scored)::bigint,
               sum(ns.positives)::bigint, min(m.median_seconds), NULL, NULL, NULL, NULL
        FROM ns LEFT JOIN v_findings_by_night m ON m.night = ns.night
        GROUP BY ns.night
        ORDER BY level, night, site
        """,
        start=start,
        end=end,
    )


def recent_runs(conn: Connection, limit: int = 10) -> list[Row]:
    return _rows(
        conn,
        "SELECT run_id, night, status, model_version, started_at, finished_at, duration_seconds"
        " FROM v_runs ORDER BY started_at DESC, run_id DESC LIMIT :limit",
        limit=limit,
    )


# ---------------------------------------------------------------- data quality
def quality_by_site(
    conn: Connection, start: dt.date, end: dt.date, site: str | None
) -> list[Row]:
    return _rows(
        conn,
        "SELECT night, site, studies, accepted, warned, rejected, pass_rate, warn_rate,"
        " reject_rate FROM v_quality_by_site WHERE night BETWEEN :start AND :end"
        " AND (CAST(:site AS text) IS NULL OR site = :site) ORDER BY night, site",
        start=start,
        end=end,
        site=site,
    )


def rejects_by_reason(
    conn: Connection, start: dt.date, end: dt.date, site: str | None
) -> list[Row]:
    return _rows(
        conn,
        "SELECT reason, kind, sum(n)::bigint AS n FROM v_rejects_by_reason"
        " WHERE night BETWEEN :start AND :end AND (CAST(:site AS text) IS NULL OR site = :site)"
        " GROUP BY reason, kind ORDER BY n DESC, reason",
        start=start,
        end=end,
        site=site,
    )


def reject_nights(
    conn: Connection, start: dt.date, end: dt.date, site: str | None, limit: int = 30
) -> list[Row]:
    """The newest nights with quarantined items, per site: the entry points of the drill-down."""
    return _rows(
        conn,
        "SELECT night, site, sum(n)::bigint AS n FROM v_rejects_by_reason"
        " WHERE night BETWEEN :start AND :end AND (CAST(:site AS text) IS NULL OR site = :site)"
        " GROUP BY night, site ORDER BY night DESC, site LIMIT :limit",
        start=start,
        end=end,
        site=site,
        limit=limit,
    )


def failed_expectation_summary(
    conn: Connection, start: dt.date, end: dt.date, site: str | None
) -> list[Row]:
    return _rows(
        conn,
        "SELECT suite, expectation, column_name, count(*)::bigint AS n,"
        " count(DISTINCT study_uid)::bigint AS studies FROM v_failed_expectations"
        " WHERE night BETWEEN :start AND :end AND (CAST(:site AS text) IS NULL OR site = :site)"
        " GROUP BY suite, expectation, column_name ORDER BY n DESC, expectation LIMIT 50",
        start=start,
        end=end,
        site=site,
    )


def failed_expectations(
    conn: Connection,
    start: dt.date,
    end: dt.date,
    site: str | None,
    limit: int = 50,
) -> list[Row]:
    """The newest ``limit`` failures with what they observed.

    The page is picked from the view on the columns the failures' covering index holds; only
    its rows are then read from the table, by primary key, for ``observed`` and ``reason`` (a
    year has tens of thousands of failures, each on its own heap page).
    """
    return _rows(
        conn,
        "WITH page AS (SELECT expectation_id, night, site, study_uid, suite, expectation,"
        " column_name FROM v_failed_expectations"
        " WHERE night BETWEEN :start AND :end AND (CAST(:site AS text) IS NULL OR site = :site)"
        " ORDER BY night DESC, site, study_uid, expectation_id LIMIT :limit)"
        " SELECT p.night, p.site, p.study_uid, p.suite, p.expectation, p.column_name,"
        " e.observed, e.reason FROM page p JOIN expectation_results e ON e.id = p.expectation_id"
        " ORDER BY p.night DESC, p.site, p.study_uid, p.expectation_id",
        start=start,
        end=end,
        site=site,
        limit=limit,
    )


def hu_trends(conn: Connection, start: dt.date, end: dt.date, site: str | None) -> list[Row]:
    return _rows(
        conn,
        "SELECT night, site, n, air_peak, brain_median, p01, p99 FROM v_hu_trends"
        " WHERE night BETWEEN :start AND :end AND (CAST(:site AS text) IS NULL OR site = :site)"
        " ORDER BY night, site",
        start=start,
        end=end,
        site=site,
    )


def night_quarantine(conn: Connection, night: dt.date, site: str | None) -> list[Row]:
    return _rows(
        conn,
        "SELECT quarantine_id, run_id, kind, study_uid, object_ref,"
        " COALESCE(site, '(unknown)') AS site, reason, reasons, detail"
        " FROM v_quarantine WHERE night = :night"
        " AND (CAST(:site AS text) IS NULL OR COALESCE(site, '(unknown)') = :site)"
        " ORDER BY site, kind DESC, reason, study_uid, object_ref",
        night=night,
        site=site,
    )


def night_failed_expectations(conn: Connection, night: dt.date, site: str | None) -> list[Row]:
    return _rows(
        conn,
        "SELECT study_uid, site, suite, expectation, column_name, observed, reason"
        " FROM v_failed_expectations WHERE night = :night"
        " AND (CAST(:site AS text) IS NULL OR site = :site)"
        " ORDER BY site, study_uid, expectation_id",
        night=night,
        site=site,
    )


# ---------------------------------------------------------------- audit
WORKLIST_SORTS: dict[str, str] = {
    "exam_date": "exam_date",
    "site": "site",
    "kind": "kind",
    "rank": "rank",
    "probability": "probability",
    "volume_ml": "volume_ml",
    "status": "status",
    "audited_at": "audited_at",
    "study_uid": "study_uid",
}
DIRECTIONS: dict[str, str] = {"asc": "ASC", "desc": "DESC"}


@dataclass(frozen=True)
class WorklistQuery:
    site: str | None
    start: dt.date | None
    end: dt.date | None
    kind: str | None
    status: str | None
    sort: str
    direction: str
    limit: int
    offset: int


_WORKLIST_WHERE = (
    " WHERE (CAST(:site AS text) IS NULL OR site = :site)"
    " AND (CAST(:start AS date) IS NULL OR exam_date >= :start)"
    " AND (CAST(:end AS date) IS NULL OR exam_date <= :end)"
    " AND (CAST(:kind AS text) IS NULL OR kind = :kind)"
    " AND (CAST(:status AS text) IS NULL OR status = :status)"
)


def worklist(conn: Connection, q: WorklistQuery) -> tuple[list[Row], int]:
    """One page of the worklist and the number of rows matching the filters.

    The count rides on the page (``count(*) OVER ()``, over the rows the sort has to read
    anyway); only a page past the end needs a query of its own for it.
    """
    column = WORKLIST_SORTS.get(q.sort, "exam_date")
    direction = DIRECTIONS.get(q.direction, "DESC")
    params = {"site": q.site, "start": q.start, "end": q.end, "kind": q.kind, "status": q.status}
    rows = _rows(
        conn,
        "SELECT item_id, audit_run_key, audited_at, study_uid, site, kind, rank, probability,"
        " volume_ml, read_ich, model_version, exam_date, status, adjudicated_at,"
        f" count(*) OVER () AS matching FROM v_worklist{_WORKLIST_WHERE}"
        f" ORDER BY {column} {direction} NULLS LAST, item_id {direction}"
        " LIMIT :limit OFFSET :offset",
        **params,
        limit=q.limit,
        offset=q.offset,
    )
    if rows:
        total = rows[0]["matching"]
    else:
        total = conn.execute(
            text("SELECT count(*) FROM v_worklist" + _WORKLIST_WHERE), params
        ).scalar_one()
    for row in rows:
        del row["matching"]
    return rows, int(total)


def latest_audit_metrics(conn: Connection, metrics: Sequence[str]) -> list[Row]:
    return _rows(
        conn,
        "SELECT audit_run_key, audited_at, site, metric, value, ci_lo, ci_hi, n, method"
        " FROM v_audit_metrics WHERE audit_run_id ="
        " (SELECT id FROM audit_runs ORDER BY started_at DESC, id DESC LIMIT 1)"
        " AND metric = ANY(:metrics) ORDER BY site, metric",
        metrics=list(metrics),
    )


def audit_metric_trend(conn: Connection, metrics: Sequence[str], site: str | None) -> list[Row]:
    """A row per (metric, site) with its figures over the audit runs as arrays, oldest first
    (``audited_at``, ``value``, ``ci_lo``, ``ci_hi``)."""
    return _rows(
        conn,
        "SELECT metric, site, array_agg(audited_at ORDER BY audited_at) AS audited_at,"
        " array_agg(value ORDER BY audited_at) AS value,"
        " array_agg(ci_lo ORDER BY audited_at) AS ci_lo,"
        " array_agg(ci_hi ORDER BY audited_at) AS ci_hi"
        " FROM v_audit_metrics WHERE metric = ANY(:metrics)"
        " AND (CAST(:site AS text) IS NULL OR site = :site)"
        " GROUP BY metric, site ORDER BY metric, site",
        metrics=list(metrics),
        site=site,
    )


# ---------------------------------------------------------------- drift
def drift_series(conn: Connection, metric_key: str, site: str | None) -> list[Row]:
    """One statistic (``family/feature/statistic``) over every drift run: a row per site with its
    points as arrays ordered by run (``run_at``, ``value``; ``alert_at``/``alert_value`` for the
    runs that alerted) and the thresholds of its newest run (``last_run_at``). Arrays, not a row
    per point: a year of nightly runs for 20 sites is 7,000+ points."""
    family, _, rest = metric_key.partition("/")
    feature, _, statistic = rest.rpartition("/")
    return _rows(
        conn,
        "SELECT site, array_agg(run_at ORDER BY run_at) AS run_at,"
        " array_agg(value ORDER BY run_at) AS value,"
        " array_agg(run_at ORDER BY run_at) FILTER (WHERE status = 'alert') AS alert_at,"
        " array_agg(value ORDER BY run_at) FILTER (WHERE status = 'alert') AS alert_value,"
        " max(run_at) AS last_run_at,"
        " (array_agg(threshold_warn ORDER BY run_at DESC))[1] AS threshold_warn,"
        " (array_agg(threshold_alert ORDER BY run_at DESC))[1] AS threshold_alert"
        " FROM v_drift_status"
        " WHERE family = :family AND feature = :feature AND statistic = :statistic"
        " AND (CAST(:site AS text) IS NULL OR site = :site) GROUP BY site ORDER BY site",
        family=family,
        feature=feature,
        statistic=statistic,
        site=site,
    )


def drift_current(conn: Connection) -> list[Row]:
    """Every statistic as of its newest drift run (the page derives keys, alerts and counts)."""
    return _rows(
        conn,
        "SELECT site, family, feature, statistic, metric_key, value, p_value, threshold_warn,"
        " threshold_alert, status, alerted, delivery, n_reference, n_recent, recent_from,"
        " recent_to, run_at FROM v_drift_current ORDER BY site, metric_key",
    )


def recent_drift_alerts(conn: Connection, site: str | None, limit: int = 20) -> list[Row]:
    return _rows(
        conn,
        "SELECT a.created_at, a.site, a.family || '/' || a.feature || '/' || a.statistic"
        " AS metric_key, a.value, a.threshold, a.delivery FROM drift_alerts a"
        " WHERE (CAST(:site AS text) IS NULL OR a.site = :site)"
        " ORDER BY a.created_at DESC, a.id DESC LIMIT :limit",
        site=site,
        limit=limit,
    )


# ---------------------------------------------------------------- models
def model_versions(conn: Connection) -> list[Row]:
    return _rows(
        conn,
        "SELECT model_version, variant, threshold, weights_sha256, metrics, created_at"
        " FROM model_versions ORDER BY created_at DESC, model_version",
    )


def model_usage(conn: Connection) -> list[Row]:
    """Findings per (model version, night) over the whole history."""
    return _rows(
        conn,
        "SELECT model_version, night, findings, positives FROM v_model_usage"
        " ORDER BY night, model_version",
    )
