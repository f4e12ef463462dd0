-- Retention of the results database. Idempotent (CREATE OR REPLACE). Apply after migrations:
--   apply_sql(url, "sql/retention.sql")
-- then, nightly or weekly, as bloodnet_owner (or a superuser):
--   SELECT * FROM bloodnet_retention(180);            -- keep 180 days
--   SELECT * FROM bloodnet_retention(30, '2026-01-01'); -- as of a given time (tests, backfills)
--
-- What goes: the bulky diagnostics, per-expectation outcomes and quarantine rows, older than
-- keep_days. What stays: findings, validation verdicts, HU statistics, studies, series and the
-- object manifest. Findings are the clinical record, verdicts and HU statistics feed the
-- per-night dashboards and the drift baselines, and the manifest is what keeps discovery
-- incremental (dropping it would re-screen every old object).

CREATE OR REPLACE FUNCTION public.bloodnet_retention(
    keep_days integer DEFAULT 180,
    as_of timestamptz DEFAULT now()
)
RETURNS TABLE (table_name text, deleted bigint)
LANGUAGE plpgsql
AS $$
DECLARE
    cutoff timestamptz;
    n bigint;
BEGIN
    IF keep_days IS NULL OR keep_days < 1 THEN
        RAISE EXCEPTION 'keep_days must be at least 1, got %', keep_days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    cutoff := as_of - make_interval(days => keep_days);

    DELETE FROM public.expectation_results e WHERE e.created_at < cutoff;
    GET DIAGNOSTICS n = ROW_COUNT;
    table_name := 'expectation_results';
    deleted := n;
    RETURN NEXT;

    DELETE FROM public.quarantine q WHERE q.created_at < cutoff;
    GET DIAGNOSTICS n = ROW_COUNT;
    table_name := 'quarantine';
    deleted := n;
    RETURN NEXT;
END
$$;

COMMENT ON FUNCTION public.bloodnet_retention(integer, timestamptz) IS
    'Delete expectation_results and quarantine rows older than keep_days (as of as_of); '
    'findings, verdicts, HU statistics and the manifest are kept.';

REVOKE EXECUTE ON FUNCTION public.bloodnet_retention(integer, timestamptz) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bloodnet_owner') THEN
        GRANT EXECUTE ON FUNCTION public.bloodnet_retention(integer, timestamptz)
            TO bloodnet_owner;
    END IF;
END
$$;
