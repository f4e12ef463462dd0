-- Views read by the dashboards (bloodnet_ops/dashboard/queries.py) and by people running SQL.
-- Applied idempotently by bloodnet_ops.dashboard.views.apply_views(url), in one transaction: the
-- views are dropped and created again (so their columns may change), functions are replaced.
-- They read the rollup_* tables and site columns of migration 0003_dashboard_indexes.
--
-- A "night" is the UTC calendar date on which the screening run started
-- (inference_runs.started_at); rows written without a run (`bloodnet validate --db`) fall back to
-- their own timestamp. The per-row views are a UNION ALL of those two cases on purpose: a filter
-- on `night` then reaches the small runs table, and the big tables are read through their run_id
-- indexes for the nights asked for, instead of computing every row's night. The runs that have
-- no inference_runs row are found in the small per-run rollups (rollup_*, kept exact by
-- triggers), not by scanning a big table for them.
--
-- Aggregates read the rollups (one row per run, site and day), not the per-row tables: a year of
-- 20 sites is ~7,000 rollup rows against ~150,000 studies and ~900,000 expectation outcomes.
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

-- One row per validated study per run (site: the study's site as that run saw it).
CREATE OR REPLACE VIEW v_validation_nights AS
SELECT vr.id AS validation_id, vr.study_uid, vr.site, vr.run_id,
       (r.started_at AT TIME ZONE 'UTC')::date AS night,
       vr.series_uid, vr.verdict, vr.reasons, vr.n_slices, vr.validated_at
FROM inference_runs r
JOIN validation_results vr ON vr.run_id = r.run_id
UNION ALL
SELECT vr.id, vr.study_uid, vr.site, vr.run_id,
       (vr.validated_at AT TIME ZONE 'UTC')::date,
       vr.series_uid, vr.verdict, vr.reasons, vr.n_slices, vr.validated_at
FROM validation_results vr
WHERE vr.run_id IN (SELECT o.run_id FROM rollup_validation o
                    WHERE NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = o.run_id));

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
WHERE f.run_id IN (SELECT o.run_id FROM rollup_findings o
                   WHERE NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = o.run_id));

-- The per-run rollups (tables rollup_*, kept exact by triggers: see bloodnet_ops/db/models.py)
-- with their night, by the same rule as the per-row views. The aggregate views below read
-- these, so a year of nights costs thousands of rows, not hundreds of thousands. A group that
-- lost all its rows keeps a row of zeros (the writer role may not DELETE): skipped here.
CREATE OR REPLACE VIEW v_validation_rollup AS
SELECT (r.started_at AT TIME ZONE 'UTC')::date AS night, v.site, v.run_id,
       v.studies, v.accepted, v.warned, v.rejected
FROM inference_runs r
JOIN rollup_validation v ON v.run_id = r.run_id
WHERE v.studies <> 0
UNION ALL
SELECT v.day, v.site, v.run_id, v.studies, v.accepted, v.warned, v.rejected
FROM rollup_validation v
WHERE v.studies <> 0
  AND NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = v.run_id);

-- seconds: every scored study's load + inference time (s), one element per finding.
CREATE OR REPLACE VIEW v_finding_rollup AS
SELECT (r.started_at AT TIME ZONE 'UTC')::date AS night, f.site, f.model_version, f.run_id,
       f.scored, f.positives, f.seconds
FROM inference_runs r
JOIN rollup_findings f ON f.run_id = r.run_id
WHERE f.scored <> 0
UNION ALL
SELECT f.day, f.site, f.model_version, f.run_id, f.scored, f.positives, f.seconds
FROM rollup_findings f
WHERE f.scored <> 0
  AND NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = f.run_id);

-- Every scored study's time per run (all sites and models), sorted.
CREATE OR REPLACE VIEW v_run_seconds AS
SELECT (r.started_at AT TIME ZONE 'UTC')::date AS night, t.run_id, t.scored, t.seconds
FROM inference_runs r
JOIN rollup_run_seconds t ON t.run_id = r.run_id
WHERE t.scored <> 0
UNION ALL
SELECT t.day, t.run_id, t.scored, t.seconds
FROM rollup_run_seconds t
WHERE t.scored <> 0
  AND NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = t.run_id);

-- HU sums (HU) and counts; air_peak and brain_median may be NULL, so they have their own count.
CREATE OR REPLACE VIEW v_hu_rollup AS
SELECT (r.started_at AT TIME ZONE 'UTC')::date AS night, h.site, h.run_id, h.n,
       h.air_peak_n, h.air_peak_sum, h.brain_median_n, h.brain_median_sum,
       h.p01_sum, h.p99_sum, h.mean_sum, h.std_sum
FROM inference_runs r
JOIN rollup_hu h ON h.run_id = r.run_id
WHERE h.n <> 0
UNION ALL
SELECT h.day, h.site, h.run_id, h.n, h.air_peak_n, h.air_peak_sum, h.brain_median_n,
       h.brain_median_sum, h.p01_sum, h.p99_sum, h.mean_sum, h.std_sum
FROM rollup_hu h
WHERE h.n <> 0
  AND NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = h.run_id);

-- site '(unknown)': an unreadable object, whose header (and so its site) could not be read.
CREATE OR REPLACE VIEW v_quarantine_rollup AS
SELECT (r.started_at AT TIME ZONE 'UTC')::date AS night,
       COALESCE(NULLIF(q.site, ''), '(unknown)') AS site, q.run_id, q.kind, q.reason, q.n
FROM inference_runs r
JOIN rollup_quarantine q ON q.run_id = r.run_id
WHERE q.n <> 0
UNION ALL
SELECT q.day, COALESCE(NULLIF(q.site, ''), '(unknown)'), q.run_id, q.kind, q.reason, q.n
FROM rollup_quarantine q
WHERE q.n <> 0
  AND NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = q.run_id);

-- Pass / warn / reject counts and rates per site and night.
CREATE OR REPLACE VIEW v_quality_by_site AS
SELECT night,
       site,
       sum(studies)::bigint AS studies,
       sum(accepted)::bigint AS accepted,
       sum(warned)::bigint AS warned,
       sum(rejected)::bigint AS rejected,
       sum(accepted)::double precision / sum(studies) AS pass_rate,
       sum(warned)::double precision / sum(studies) AS warn_rate,
       sum(rejected)::double precision / sum(studies) AS reject_rate
FROM v_validation_rollup
GROUP BY night, site;

-- Model output per site and night: scored studies, positives, time per study (load + infer, s).
-- One pass over the studies' times: each rollup row expands to one row per finding (s), and its
-- positives are counted once, on its first element (every row kept has at least one). The two
-- set-returning functions run in lockstep, so i numbers the elements; in the select list they
-- stream, where a lateral unnest would materialise every array (~3x slower).
CREATE OR REPLACE VIEW v_findings_by_site AS
SELECT night,
       site,
       count(*)::bigint AS scored,
       COALESCE(sum(positives) FILTER (WHERE i = 1), 0)::bigint AS positives,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS median_seconds,
       sum(s) AS total_seconds
FROM (SELECT night, site, positives, unnest(seconds) AS s,
             generate_series(1, cardinality(seconds)) AS i
      FROM v_finding_rollup) AS f
GROUP BY night, site;

-- Studies scored per night (all sites) and their median time (load + infer, s). A night is
-- usually one run, whose sorted times give the median by lookup; a night of several runs (or a
-- run whose rows span two days without an inference_runs row) sorts its times instead.
CREATE OR REPLACE VIEW v_findings_by_night AS
WITH parts AS (
    SELECT night, count(*) AS parts, sum(scored) AS scored,
           min(seconds) AS seconds  -- the only array when parts = 1
    FROM v_run_seconds
    GROUP BY night
)
SELECT p.night,
       p.scored::bigint AS scored,
       CASE WHEN p.parts = 1 THEN bloodnet_sorted_median(p.seconds)
            ELSE (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s)
                  FROM (SELECT unnest(x.seconds) AS s FROM v_run_seconds x
                        WHERE x.night = p.night) AS u)
       END AS median_seconds
FROM parts p;

-- Each site's median time per study (load + infer, s) over the nights first_night..last_night,
-- exact, without sorting every study's time. The rollup rows' times are sorted, so a row's own
-- median is a lookup; the 20th and 80th percentiles of those row medians (lo, hi) bracket the
-- site's median in practice. width_bucket counts a sorted row's values <= x by binary search,
-- so the values <= lo are counted, not read, and only those in (lo, hi] are gathered and
-- sorted: if the median's ranks fall among them it is read off there, else (a site whose
-- rows are very unequal) every value is sorted after all. Either way the result equals
-- percentile_cont(0.5) over the studies, to the last bit (same lo + 0.5 * (hi - lo)).
CREATE OR REPLACE FUNCTION bloodnet_site_medians(first_night date, last_night date)
RETURNS TABLE (site text, median_seconds double precision)
LANGUAGE sql STABLE AS $$
WITH w AS (
    SELECT f.site, f.seconds FROM v_finding_rollup f
    WHERE f.night BETWEEN first_night AND last_night
),
b AS (
    SELECT w.site, sum(cardinality(w.seconds)) AS n,
           percentile_disc(0.2) WITHIN GROUP (ORDER BY bloodnet_sorted_median(w.seconds)) AS lo,
           percentile_disc(0.8) WITHIN GROUP (ORDER BY bloodnet_sorted_median(w.seconds)) AS hi
    FROM w GROUP BY w.site
),
s AS (
    SELECT w.site, w.seconds, width_bucket(b.lo, w.seconds) AS i, width_bucket(b.hi, w.seconds) AS j
    FROM w JOIN b ON b.site = w.site
),
below AS (SELECT s.site, sum(s.i) AS at_lo FROM s GROUP BY s.site),
band AS (
    SELECT x.site, bloodnet_sorted(array_agg(x.v)) AS vals
    FROM (SELECT s.site, unnest(s.seconds[s.i + 1:s.j]) AS v FROM s) AS x
    GROUP BY x.site
),
k AS (  -- the median's ranks (1-based; equal for an odd count) within the band
    SELECT b.site, d.vals, ((b.n + 1) / 2 - c.at_lo)::integer AS k1,
           (b.n / 2 + 1 - c.at_lo)::integer AS k2
    FROM b JOIN below c ON c.site = b.site LEFT JOIN band d ON d.site = b.site
)
SELECT k.site,
       CASE WHEN k.k1 >= 1 AND k.k2 <= cardinality(k.vals)
            THEN k.vals[k.k1] + 0.5 * (k.vals[k.k2] - k.vals[k.k1])
            ELSE (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a.v)
                  FROM (SELECT unnest(w.seconds) AS v FROM w WHERE w.site = k.site) AS a)
       END
FROM k
$$;

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
    WHERE q.run_id IN (SELECT o.run_id FROM rollup_quarantine o
                       WHERE NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = o.run_id))
)
SELECT q.id AS quarantine_id, q.run_id, q.night, q.kind,
       CASE WHEN q.kind = 'study' THEN q.study_uid END AS study_uid,
       CASE WHEN q.kind = 'object'
            THEN 'obj-' || left(encode(sha256(convert_to(q.ref, 'UTF8')), 'hex'), 16) END
           AS object_ref,
       q.site, q.reason, q.reasons,
       CASE WHEN q.kind = 'study' THEN q.detail ELSE '' END AS detail,
       q.created_at
FROM q;

-- Rejections per primary reason code, site and night.
CREATE OR REPLACE VIEW v_rejects_by_reason AS
SELECT night,
       site,
       reason,
       kind,
       sum(n)::bigint AS n
FROM v_quarantine_rollup
GROUP BY night, site, reason, kind;

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
      AND e.run_id IN (SELECT o.run_id FROM rollup_failed_expectations o
                       WHERE NOT EXISTS (SELECT 1 FROM inference_runs r WHERE r.run_id = o.run_id))
)
SELECT e.id AS expectation_id, e.night, e.site, e.run_id, e.study_uid, e.suite, e.expectation,
       e.column_name, e.observed, e.reason, e.created_at
FROM e;

-- HU statistics of the scored series, averaged per site and night (HU).
CREATE OR REPLACE VIEW v_hu_trends AS
SELECT night,
       site,
       sum(n)::bigint AS n,
       sum(air_peak_sum) / NULLIF(sum(air_peak_n), 0) AS air_peak,
       sum(brain_median_sum) / NULLIF(sum(brain_median_n), 0) AS brain_median,
       sum(p01_sum) / sum(n) AS p01,
       sum(p99_sum) / sum(n) AS p99,
       sum(mean_sum) / sum(n) AS mean,
       sum(std_sum) / sum(n) AS std
FROM v_hu_rollup
GROUP BY night, site;

-- Which model version scored which nights, and how much.
CREATE OR REPLACE VIEW v_model_usage AS
SELECT model_version,
       night,
       sum(scored)::bigint AS findings,
       sum(positives)::bigint AS positives,
       count(DISTINCT site)::bigint AS sites
FROM v_finding_rollup
GROUP BY model_version, night;

-- The audit worklist: the newest audit run's entry per (study, kind), with the study's date
-- (DICOM StudyDate) and the adjudication status ('pending' until a reviewer records an outcome).
-- The audit run's key and time travel through the DISTINCT ON rather than a second join, which
-- would hide from the planner that every entry survives (and so lead it to one index probe per
-- entry for the exam dates, instead of one merge over the studies).
CREATE OR REPLACE VIEW v_worklist AS
SELECT i.id AS item_id,
       i.audit_run_id,
       i.run_key AS audit_run_key,
       i.started_at AS audited_at,
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
    SELECT DISTINCT ON (i.study_uid, i.kind) i.*, a.run_key, a.started_at
    FROM audit_items i
    JOIN audit_runs a ON a.id = i.audit_run_id
    ORDER BY i.study_uid, i.kind, a.started_at DESC, i.id DESC
) i
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
