"""
### BloodNet drift monitor

drift (per site: recent nights vs reference nights) → report.

Runs whenever the nightly screening updates the findings Asset. For every site it compares
acquisition metadata (PSI, chi-square), HU statistics of accepted studies (KS), the model's scores
(PSI, KS) and positive rate (two-proportion test, CUSUM), and reject rates by reason
(two-proportion test). Every statistic is stored with its thresholds and status; alerts become
rows in `drift_alerts`, a log line, and a POST to `BLOODNET_ALERT_WEBHOOK` when it is set.
The run is keyed on the Airflow run id, so a retry replaces its own statistics.
"""

from __future__ import annotations

import pendulum
from _common import DB_CONN_ID, FINDINGS_ASSET, db_url_from_connection, retry_delays
from airflow.sdk import Param, dag, task

RETRY_DELAY, _ = retry_delays()

PARAMS = {
    "reference_nights": Param(14, type="integer", minimum=1,
                              description="The first N nights of each site are the reference."),
    "recent_nights": Param(7, type="integer", minimum=1,
                           description="The last K nights of each site are the recent window."),
    "reference_from": Param(None, type=["null", "string"], format="date",
                            description="Pin the reference period (first day, YYYY-MM-DD)."),
    "reference_to": Param(None, type=["null", "string"], format="date",
                          description="Pin the reference period (last day, YYYY-MM-DD)."),
    "model_version": Param(None, type=["null", "string"],
                           description="Whose scores to compare (default: the newest)."),
}


@dag(
    dag_id="bloodnet_drift_monitor",
    schedule=[FINDINGS_ASSET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    tags=["bloodnet", "drift"],
    doc_md=__doc__,
    default_args={"owner": "bloodnet", "retries": 2, "retry_delay": RETRY_DELAY},
)
def bloodnet_drift_monitor():
    @task
    def drift(params=None, run_id=None) -> dict:
        """Compute, store and alert; returns counts and the alerts (sites and metrics, no PHI)."""
        from datetime import date

        from airflow.sdk import Connection

        from bloodnet_ops.drift.monitor import run_drift
        from bloodnet_ops.drift.windows import WindowSpec

        def day(value):
            return date.fromisoformat(value) if value else None

        spec = WindowSpec(
            reference_nights=params["reference_nights"], recent_nights=params["recent_nights"],
            reference_from=day(params["reference_from"]), reference_to=day(params["reference_to"]),
        )
        db_url = db_url_from_connection(Connection.get(DB_CONN_ID))
        result = run_drift(db_url, reference=spec, model_version=params["model_version"],
                           run_key=run_id)
        return {"drift_run_id": result.drift_run_id, "run_key": result.run_key,
                "sites": len(result.sites), "skipped_sites": len(result.skipped_sites),
                "webhook": result.webhook,
                "alerts": [a.contract() for a in result.alerts]}

    @task
    def report(summary: dict) -> dict:
        """Log the outcome: one line per alert, or that every site is stable."""
        import logging

        log = logging.getLogger("bloodnet.drift")
        for alert in summary["alerts"]:
            log.warning("drift alert %s", alert)
        if not summary["alerts"]:
            log.info("no drift alerts over %d sites", summary["sites"])
        return summary

    report(drift())


bloodnet_drift_monitor()
