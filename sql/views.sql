-- Views read by the dashboards (bloodnet_ops/dashboard/queries.py) and by people running SQL.
-- Applied idempotently by bloodnet_ops.dashboard.views.apply_views(url): CREATE OR REPLACE only,
-- so a new column may only be appended at the end of a view.
--
-- A "night" is the UTC calendar date on which the screening run started
-- (inference_runs.started_at); rows written without a run (`bloodnet validate --db`) fall back to
-- their own timestamp. The per-row views are a UNION ALL of those two cases on purpose: a filter
-- on `night` then reaches the small runs table, and the big tables are read through their run_id
-- indexes for the nights asked for, instead of computing every row's night.
-- Patient identifiers never appear here: studies carry only pseudonyms, and the views expose UIDs.

-- Planner statistics on the night expression: without them a filter on `night` is estimated at a
-- handful of runs and the plan degrades to one index probe per row. Expression statistics need
-- PostgreSQL 14+. Alembic does not manage statistics objects, so they live here with the views.
CREATE STATISTICS IF NOT EXISTS st_inference_runs_night
    ON ((started_at AT TIME ZONE 'UTC')::date) FROM inference_runs;
ANALYZE inference_runs;

-- Runs, with their night and duration.
CREATE OR REPLACE VIEW v_runs AS
SELECT r.run_id,
       (r.started_at AT TIME ZONE 'UTC')::date AS night,
       r.status,
       r.model_version,
       r.started_at,
       r.finished_at,
       EXTRACT(EPOCH FROM (r.finished_at - r.started_at))::double precision AS duration_seconds,
       r.dag_run_id,
       r.counts
FROM inference_runs r;

-- One row per validated study per run.
CREATE OR REPLACE VIEW v_validation_nights AS
SELECT vr.id AS validation_id, vr.study_uid, s.site, vr.run_id,
       (r.started_at AT TIME ZONE 'UTC')::date AS night,
       vr.series_uid, vr.verdict, vr.reasons, vr.n_slices, vr.validated_at
FROM inference_runs r
JOIN validation_results vr ON vr.run_id = r.run_id
JOIN studies s ON s.study_uid = vr.study_uid
UNION ALL
SELECT vr.id, vr.study_uid, s.site, vr.run_id,
       (vr.validated_at AT TIME ZONE 'UTC')::date,
       vr.series_uid, vr.verdict, vr.reasons, vr.n_slices, vr.validated_at
FROM validation_results vr
JOIN studies s ON s.study_uid = vr.study_uid
WHERE NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = vr.run_id);

-- Findings with their night.
CREATE OR REPLACE VIEW v_finding_nights AS
SELECT f.id AS finding_id, f.study_uid, f.series_uid, f.site, f.run_id,
       (r.started_at AT TIME ZONE 'UTC')::date AS night,
       f.model_version, f.preprocessing_version, f.probability, f.positive, f.volume_ml,
       f.load_seconds, f.infer_seconds, f.created_at
FROM inference_runs r
JOIN findings f ON f.run_id = r.run_id
UNION ALL
SELECT f.id, f.study_uid, f.series_uid, f.site, f.run_id,
       (f.created_at AT TIME ZONE 'UTC')::date,
       f.model_version, f.preprocessing_version, f.probability, f.positive, f.volume_ml,
       f.load_seconds, f.infer_seconds, f.created_at
FROM findings f
WHERE NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = f.run_id);

-- Pass / warn / reject counts and rates per site and night.
CREATE OR REPLACE VIEW v_quality_by_site AS
SELECT night,
       site,
       count(*)::bigint AS studies,
       count(*) FILTER (WHERE verdict = 'accept')::bigint AS accepted,
       count(*) FILTER (WHERE verdict = 'accept_with_warning')::bigint AS warned,
       count(*) FILTER (WHERE verdict = 'reject')::bigint AS rejected,
       (count(*) FILTER (WHERE verdict = 'accept'))::double precision / count(*) AS pass_rate,
       (count(*) FILTER (WHERE verdict = 'accept_with_warning'))::double precision / count(*)
           AS warn_rate,
       (count(*) FILTER (WHERE verdict = 'reject'))::double precision / count(*) AS reject_rate
FROM v_validation_nights
GROUP BY night, site;

-- Model output per site and night: scored studies, positives, time per study (load + infer, s).
CREATE OR REPLACE VIEW v_findings_by_site AS
SELECT night,
       site,
       count(*)::bigint AS scored,
       count(*) FILTER (WHERE positive)::bigint AS positives,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY load_seconds + infer_seconds) AS median_seconds,
       sum(load_seconds + infer_seconds) AS total_seconds
FROM v_finding_nights
GROUP BY night, site;

-- The overview: what came in, what was rejected, what the model found, per site and night.
CREATE OR REPLACE VIEW v_nightly_overview AS
SELECT q.night,
       q.site,
       q.studies,
       q.accepted,
       q.warned,
       q.rejected,
       COALESCE(f.scored, 0)::bigint AS scored,
       COALESCE(f.positives, 0)::bigint AS positives,
       f.median_seconds,
       f.total_seconds
FROM v_quality_by_site q
LEFT JOIN v_findings_by_site f ON f.night = q.night AND f.site = q.site;

-- Quarantined studies and unreadable objects, with their night and site (NULL for an object
-- whose header could not be read). Object keys are hashed: a key is a free-form path that may
-- carry a patient's name, and an unreadable object's detail may quote it, so neither is shown.
CREATE OR REPLACE VIEW v_quarantine AS
WITH q AS (
    SELECT q.*, (r.started_at AT TIME ZONE 'UTC')::date AS night
    FROM inference_runs r JOIN quarantine q ON q.run_id = r.run_id
    UNION ALL
    SELECT q.*, (q.created_at AT TIME ZONE 'UTC')::date
    FROM quarantine q
    WHERE NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = q.run_id)
)
SELECT q.id AS quarantine_id, q.run_id, q.night, q.kind,
       CASE WHEN q.kind = 'study' THEN q.study_uid END AS study_uid,
       CASE WHEN q.kind = 'object'
            THEN 'obj-' || left(encode(sha256(convert_to(q.ref, 'UTF8')), 'hex'), 16) END
           AS object_ref,
       s.site, q.reason, q.reasons,
       CASE WHEN q.kind = 'study' THEN q.detail ELSE '' END AS detail,
       q.created_at
FROM q
LEFT JOIN studies s ON s.study_uid = q.study_uid;

-- Rejections per primary reason code, site and night.
CREATE OR REPLACE VIEW v_rejects_by_reason AS
SELECT night,
       COALESCE(site, '(unknown)') AS site,
       reason,
       kind,
       count(*)::bigint AS n
FROM v_quarantine
GROUP BY night, COALESCE(site, '(unknown)'), reason, kind;

-- Failed expectations with what they observed.
CREATE OR REPLACE VIEW v_failed_expectations AS
WITH e AS (
    SELECT e.*, (r.started_at AT TIME ZONE 'UTC')::date AS night
    FROM inference_runs r JOIN expectation_results e ON e.run_id = r.run_id
    WHERE NOT e.success
    UNION ALL
    SELECT e.*, (e.created_at AT TIME ZONE 'UTC')::date
    FROM expectation_results e
    WHERE NOT e.success
      AND NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = e.run_id)
)
SELECT e.id AS expectation_id, e.night, s.site, e.run_id, e.study_uid, e.suite, e.expectation,
       e.column_name, e.observed, e.reason, e.created_at
FROM e
JOIN studies s ON s.study_uid = e.study_uid;

-- HU statistics of the scored series, averaged per site and night (HU).
CREATE OR REPLACE VIEW v_hu_trends AS
WITH h AS (
    SELECT h.*, (r.started_at AT TIME ZONE 'UTC')::date AS night
    FROM inference_runs r JOIN hu_stats h ON h.run_id = r.run_id
    UNION ALL
    SELECT h.*, (h.created_at AT TIME ZONE 'UTC')::date
    FROM hu_stats h
    WHERE NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = h.run_id)
)
SELECT h.night,
       s.site,
       count(*)::bigint AS n,
       avg(h.air_peak) AS air_peak,
       avg(h.brain_median) AS brain_median,
       avg(h.p01) AS p01,
       avg(h.p99) AS p99,
       avg(h.mean) AS mean,
       avg(h.std) AS std
FROM h
JOIN studies s ON s.study_uid = h.study_uid
GROUP BY h.night, s.site;

-- Which model version scored which nights, and how much.
CREATE OR REPLACE VIEW v_model_usage AS
SELECT model_version,
       night,
       count(*)::bigint AS findings,
       count(*) FILTER (WHERE positive)::bigint AS positives,
       count(DISTINCT site)::bigint AS sites
FROM v_finding_nights
GROUP BY model_version, night;

-- The audit worklist: the newest audit run's entry per (study, kind), with the study's date
-- (DICOM StudyDate) and the adjudication status ('pending' until a reviewer records an outcome).
CREATE OR REPLACE VIEW v_worklist AS
SELECT i.id AS item_id,
       i.audit_run_id,
       a.run_key AS audit_run_key,
       a.started_at AS audited_at,
       i.study_uid,
       i.site,
       i.kind,
       i.rank,
       i.probability,
       i.volume_ml,
       i.read_ich,
       i.model_version,
       i.series_uid,
       st.study_date AS exam_date,
       COALESCE(ad.outcome, 'pending') AS status,
       ad.updated_at AS adjudicated_at,
       (i.seg_key IS NOT NULL) AS has_seg,
       (i.sr_key IS NOT NULL) AS has_sr
FROM (
    SELECT DISTINCT ON (i.study_uid, i.kind) i.*
    FROM audit_items i
    JOIN audit_runs a ON a.id = i.audit_run_id
    ORDER BY i.study_uid, i.kind, a.started_at DESC, i.id DESC
) i
JOIN audit_runs a ON a.id = i.audit_run_id
LEFT JOIN studies st ON st.study_uid = i.study_uid
LEFT JOIN adjudications ad ON ad.study_uid = i.study_uid AND ad.kind = i.kind;

-- Per-site audit figures with their 95 % CIs, one row per audit run, site and metric.
CREATE OR REPLACE VIEW v_audit_metrics AS
SELECT m.audit_run_id,
       a.run_key AS audit_run_key,
       a.started_at AS audited_at,
       a.date_from,
       a.date_to,
       a.model_version,
       m.site,
       m.metric,
       m.value,
       m.ci_lo,
       m.ci_hi,
       m.n,
       m.method
FROM audit_metrics m
JOIN audit_runs a ON a.id = m.audit_run_id;

-- Every drift statistic with its thresholds, status and whether an alert was raised from it.
CREATE OR REPLACE VIEW v_drift_status AS
SELECT m.id AS drift_metric_id,
       m.drift_run_id,
       d.run_key AS drift_run_key,
       d.started_at AS run_at,
       m.site,
       m.family,
       m.feature,
       m.statistic,
       m.family || '/' || m.feature || '/' || m.statistic AS metric_key,
       m.value,
       m.p_value,
       m.threshold_warn,
       m.threshold_alert,
       m.status,
       m.n_reference,
       m.n_recent,
       m.reference_from,
       m.reference_to,
       m.recent_from,
       m.recent_to,
       (al.id IS NOT NULL) AS alerted,
       al.delivery
FROM drift_metrics m
JOIN drift_runs d ON d.id = m.drift_run_id
LEFT JOIN drift_alerts al ON al.drift_metric_id = m.id;

-- The current state: every statistic of each site's newest drift run (drift run ids grow with
-- time). Reading one run per site through the (drift_run_id, site, ...) unique index keeps this
-- cheap however long the history is.
CREATE OR REPLACE VIEW v_drift_current AS
SELECT v.*
FROM (SELECT site, max(drift_run_id) AS drift_run_id FROM drift_metrics GROUP BY site) latest
JOIN v_drift_status v ON v.drift_run_id = latest.drift_run_id AND v.site = latest.site;
