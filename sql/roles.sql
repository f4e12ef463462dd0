-- Least-privilege roles of the results database. Idempotent: safe to run again after every
-- migration. Run as a superuser (or a role with CREATEROLE that owns the database):
--   psql "$URL" -v ON_ERROR_STOP=1 -f sql/roles.sql
--   python -c 'from bloodnet_ops.db.session import apply_sql; apply_sql(URL, "sql/roles.sql")'
--
-- Three group roles (NOLOGIN); login users get membership, e.g.
--   CREATE ROLE airflow_worker LOGIN PASSWORD '...' IN ROLE bloodnet_writer;
--   bloodnet_owner   migrations: owns and alters the schema
--   bloodnet_writer  the pipeline: SELECT, INSERT, UPDATE on tables; no DELETE, no DDL
--   bloodnet_reader  dashboards and audits: SELECT only, including views created later

-- Role creation races between sessions surface as duplicate_object or unique_violation.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['bloodnet_owner', 'bloodnet_writer', 'bloodnet_reader'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END LOOP;
END
$$;

-- Database-level: everyone may connect; only the owner role may create schemas.
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO bloodnet_owner, bloodnet_writer, '
                   'bloodnet_reader', current_database());
    EXECUTE format('GRANT CREATE ON DATABASE %I TO bloodnet_owner', current_database());
END
$$;

-- Schema: nobody but the owner role creates objects (PostgreSQL < 15 let PUBLIC create).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO bloodnet_owner;
GRANT USAGE ON SCHEMA public TO bloodnet_writer, bloodnet_reader;

-- Hand the schema's tables, views and functions to the owner role, so migrations run by a
-- member of bloodnet_owner can alter them (identity sequences follow their tables).
DO $$
DECLARE
    obj record;
BEGIN
    IF current_user = 'bloodnet_owner' THEN
        RETURN;
    END IF;
    FOR obj IN
        SELECT c.relname, c.relkind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
          AND pg_get_userbyid(c.relowner) = current_user
    LOOP
        EXECUTE format('ALTER %s public.%I OWNER TO bloodnet_owner',
                       CASE obj.relkind WHEN 'v' THEN 'VIEW'
                                        WHEN 'm' THEN 'MATERIALIZED VIEW'
                                        ELSE 'TABLE' END,
                       obj.relname);
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure AS sig
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proname LIKE 'bloodnet\_%'
          AND pg_get_userbyid(p.proowner) = current_user
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO bloodnet_owner', obj.sig);
    END LOOP;
END
$$;

-- Objects that exist now (tables, views and materialized views are all "tables" here).
GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO bloodnet_owner;
GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public TO bloodnet_owner;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO bloodnet_writer;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO bloodnet_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO bloodnet_reader;

-- Alembic's bookkeeping belongs to migrations alone.
DO $$
BEGIN
    IF to_regclass('public.alembic_version') IS NOT NULL THEN
        REVOKE INSERT, UPDATE ON public.alembic_version FROM bloodnet_writer;
    END IF;
END
$$;

-- Objects created later (new tables from migrations, the dashboard views) by the owner role or
-- by whoever runs this file, which is usually also who migrates.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['bloodnet_owner', current_user] LOOP
        EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public '
                       'GRANT SELECT ON TABLES TO bloodnet_reader', r);
        EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public '
                       'GRANT SELECT, INSERT, UPDATE ON TABLES TO bloodnet_writer', r);
        EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public '
                       'GRANT USAGE, SELECT ON SEQUENCES TO bloodnet_writer', r);
        EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public '
                       'GRANT ALL PRIVILEGES ON TABLES TO bloodnet_owner', r);
    END LOOP;
END
$$;

-- Retention deletes rows; only the owner role may run it (see sql/retention.sql).
DO $$
BEGIN
    IF to_regprocedure('public.bloodnet_retention(integer, timestamp with time zone)')
            IS NOT NULL THEN
        REVOKE EXECUTE ON FUNCTION public.bloodnet_retention(integer, timestamptz) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION public.bloodnet_retention(integer, timestamptz)
            TO bloodnet_owner;
    END IF;
END
$$;
