"""
### BloodNet nightly ICH screening

discover → validate → plan batches → infer (mapped, queue/pool `gpu`) → finalise → publish.

Each task reads the connections (`bloodnet_s3`, `bloodnet_db`) and its params and calls one
function of `bloodnet_ops.nightly`; only ids and counts (its typed records) travel through XCom.
Every step is idempotent: findings are upserted on (series_uid, model_version,
preprocessing_version), so a rerun of a task or of a whole night leaves the same rows. A bad
study is quarantined with a reason code and never fails the night.

Backfill: trigger with `prefix` (a key prefix under the source), `site`, a study-date range,
and `rescan=true` to score objects already seen (e.g. with a new `model_path`).
"""

from __future__ import annotations

import pendulum
from _common import FINDINGS_ASSET, bloodnet_env, retry_delays
from airflow.sdk import Param, dag, task

#: Retry delays come from the environment so tests can make them tiny; production keeps 1 min
#: doubling to at most 30 min.
RETRY_DELAY, MAX_RETRY_DELAY = retry_delays()

PARAMS = {
    "source_uri": Param(None, type=["null", "string"],
                        description="Override the scanned source (default: bloodnet_s3 extra)."),
    "prefix": Param("", type="string", description="Only keys under this prefix (backfill)."),
    "site": Param(None, type=["null", "string"], description="Only studies of this site."),
    "date_from": Param(None, type=["null", "string"], format="date",
                       description="Only studies with StudyDate on or after (YYYY-MM-DD)."),
    "date_to": Param(None, type=["null", "string"], format="date",
                     description="Only studies with StudyDate on or before (YYYY-MM-DD)."),
    "rescan": Param(False, type="boolean",
                    description="Offer every object again, not only new or changed ones."),
    "batch_size": Param(16, type="integer", minimum=1, maximum=512,
                        description="Studies per mapped inference task."),
    "model_path": Param(None, type=["null", "string"],
                        description="Weights to use (default: the shipped models/bloodnet.pt)."),
}


def _close_failed_run(context) -> None:
    """A task failed for good (retries spent): close the night's `inference_runs` row as
    'failed' rather than leave it 'running' (`finalise` never runs after a failed batch)."""
    from bloodnet_ops import nightly

    run_id = nightly.night_run_id(context.get("logical_date"), context["run_id"])
    with bloodnet_env() as cfg:
        nightly.fail_run(cfg.db_url, run_id, context.get("exception"))


def _source(params: dict, configured: str | None) -> str:
    source = params.get("source_uri") or configured
    if not source:
        raise ValueError("no source: set extra 'source_uri' on bloodnet_s3 or the source_uri param")
    return source


@dag(
    dag_id="bloodnet_nightly_screening",
    schedule="0 1 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    tags=["bloodnet", "screening"],
    doc_md=__doc__,
    default_args={
        "owner": "bloodnet",
        "retries": 2,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": MAX_RETRY_DELAY,
        "on_failure_callback": _close_failed_run,
    },
)
def bloodnet_nightly_screening():
    @task
    def discover(params=None, run_id=None, logical_date=None) -> dict:
        """List the source; record new or changed objects in the manifest as pending."""
        from bloodnet_ops import nightly

        with bloodnet_env() as cfg:
            found = nightly.discover(
                _source(params, cfg.source_uri), cfg.db_url, prefix=params["prefix"],
                run_id=nightly.night_run_id(logical_date, run_id), dag_run_id=run_id,
                rescan=params["rescan"], output_uri=cfg.output_uri, s3=cfg.s3,
            )
        return found.to_xcom()

    @task
    def validate(found: dict, params=None) -> dict:
        """Headers first, then HU; record verdicts, quarantine rejects and unreadable objects."""
        from bloodnet_ops import nightly

        with bloodnet_env() as cfg:
            summary = nightly.validate_and_record(
                _source(params, cfg.source_uri), cfg.db_url, found["run_id"],
                prefix=params["prefix"], site=params["site"], date_from=params["date_from"],
                date_to=params["date_to"], s3=cfg.s3,
            )
        return summary.to_xcom()

    @task
    def plan(validated: dict, params=None) -> list[list[str]]:
        """Accepted studies of this run, in chunks of `batch_size` study UIDs."""
        from bloodnet_ops import nightly

        with bloodnet_env() as cfg:
            return nightly.plan_batches(cfg.db_url, validated["run_id"], params["batch_size"])

    @task(queue="gpu", pool="gpu")
    def infer(study_uids: list[str], validated: dict, params=None) -> dict:
        """Load, score, write SEG/SR and upsert findings for one batch of studies."""
        from bloodnet_ops import nightly

        with bloodnet_env() as cfg:
            return nightly.infer_batch(
                _source(params, cfg.source_uri), cfg.db_url, study_uids, validated["run_id"],
                params["model_path"], output_uri=cfg.output_uri, s3=cfg.s3,
            ).to_xcom()

    @task(trigger_rule="none_failed")
    def finalise(validated: dict, counts: list[dict]) -> dict:
        """Close the run: totals and timings into `inference_runs`."""
        from bloodnet_ops import nightly

        with bloodnet_env() as cfg:
            summary = nightly.summarise_run(cfg.db_url, validated["run_id"], list(counts))
        return summary.to_xcom()

    @task(outlets=[FINDINGS_ASSET], trigger_rule="none_failed")
    def publish(summary: dict, outlet_events=None) -> dict:
        """Log the run summary and update the findings Asset (audit and drift run on it)."""
        import logging

        logging.getLogger("bloodnet.nightly").info("run summary %s", summary)
        outlet_events[FINDINGS_ASSET].extra = {
            k: summary[k] for k in ("run_id", "n_scored", "n_positive", "n_rejected")
        }
        return summary

    found = discover()
    validated = validate(found)
    batches = plan(validated)
    counts = infer.partial(validated=validated).expand(study_uids=batches)
    publish(finalise(validated, counts))


bloodnet_nightly_screening()
