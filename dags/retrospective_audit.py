"""
### BloodNet retrospective audit

import reads → audit (worklist, per-site figures with 95 % CIs, re-read sample) → report.

Runs whenever the nightly screening updates the findings Asset, or by hand for a date range
(`date_from`, `date_to`). Radiology reads come from the `reads_uri` param, else from the
`reads_uri` extra of the `bloodnet_s3` connection, else the reads already in the database are
re-matched. The audit run is keyed on the Airflow run id, so a retried task replaces its own
worklist and figures instead of adding a second copy. Reviewers adjudicate worklist items with
`bloodnet adjudicate`; the next run's figures use those verdicts.
"""

from __future__ import annotations

import pendulum
from _common import FINDINGS_ASSET, S3_CONN_ID, bloodnet_env, retry_delays
from airflow.sdk import Param, dag, task

RETRY_DELAY, _ = retry_delays()

PARAMS = {
    "reads_uri": Param(None, type=["null", "string"],
                       description="Reads file (CSV or JSON lines), a path or s3://bucket/key."),
    "date_from": Param(None, type=["null", "string"], format="date",
                       description="First study day audited (YYYY-MM-DD); empty: no limit."),
    "date_to": Param(None, type=["null", "string"], format="date",
                     description="Last study day audited (YYYY-MM-DD); empty: no limit."),
    "model_version": Param(None, type=["null", "string"],
                           description="Model version to audit (default: the newest)."),
    "reread_rate": Param(0.05, type="number", minimum=0, maximum=1,
                         description="Share of each site's model negatives sent for re-reading."),
    "reread_min": Param(2, type="integer", minimum=0, description="Re-read floor per site."),
    "reread_max": Param(50, type="integer", minimum=0, description="Re-read cap per site."),
}


@dag(
    dag_id="bloodnet_retrospective_audit",
    schedule=[FINDINGS_ASSET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    tags=["bloodnet", "audit"],
    doc_md=__doc__,
    default_args={"owner": "bloodnet", "retries": 2, "retry_delay": RETRY_DELAY},
)
def bloodnet_retrospective_audit():
    @task
    def import_reads(params=None) -> dict | None:
        """Import the reads file (pseudonymised, idempotent); unmatched rows are kept."""
        from airflow.sdk import Connection

        from bloodnet_ops.audit.reads import import_reads_uri

        with bloodnet_env() as cfg:
            uri = params["reads_uri"] or Connection.get(S3_CONN_ID).extra_dejson.get("reads_uri")
            if not uri:
                return None
            return import_reads_uri(cfg.db_url, uri, s3=cfg.s3).summary()

    @task
    def audit(imported: dict | None, params=None, run_id=None) -> dict:
        """Worklist and figures for the window, stored under this run's key."""
        from bloodnet_ops.audit.run import run_audit

        with bloodnet_env() as cfg:
            report = run_audit(
                cfg.db_url, date_from=params["date_from"], date_to=params["date_to"],
                model_version=params["model_version"], reread_rate=params["reread_rate"],
                reread_min=params["reread_min"], reread_max=params["reread_max"],
                run_key=run_id,
            )
        return {"audit_run_id": report.audit_run_id, "run_key": report.run_key,
                "model_version": report.model_version, **report.counts}

    @task
    def report(summary: dict) -> dict:
        """Log the counts (no PHI: numbers and the run key only)."""
        import logging

        logging.getLogger("bloodnet.audit").info("audit summary %s", summary)
        return summary

    report(audit(import_reads()))


bloodnet_retrospective_audit()
