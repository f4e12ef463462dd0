"""The nightly screening: one thin function per DAG task, discover → validate → plan → infer →
summarise, one module each, and :func:`screen`, which runs them all in-process (``bloodnet
screen``). They share no memory: state lives in the results database (manifest, verdicts, the
chosen series, findings) and the object store, and only the typed records of
:mod:`~bloodnet_ops.nightly.records` (ids and counts) pass between them. So any step can run on
another machine, and be rerun. No SQL here: every query is in :mod:`bloodnet_ops.db`.

Idempotency:

- the run id of an Airflow run is its night (:func:`night_run_id`); rerunning that night offers
  again the objects it recorded, revalidates them and upserts the same rows;
- findings are upserted on (series_uid, model_version, preprocessing_version); DICOM SEG/SR keys
  are derived from (model version, study UID) and overwritten;
- a study that fails while loading or scoring is quarantined (``pixel_decode_failed``, or
  ``unreadable`` when an object vanished) and the others carry on: one bad study never fails the
  night. An outage of the store (connection errors, 5xx) is not bad data: it raises, and Airflow
  retries the task with exponential backoff.

Outputs (SEG/SR) go under ``output_uri`` (default: ``<source>/bloodnet-derived``). Discovery never
offers keys under it, so a night does not rescan its own outputs.
"""

from bloodnet_ops.nightly.common import (
    DEFAULT_BATCH,
    DERIVED_DIR,
    default_output_uri,
    dispose_engines,
    engine,
    excluded_prefix,
    new_run_id,
    night_run_id,
    open_uri,
)
from bloodnet_ops.nightly.discover import discover
from bloodnet_ops.nightly.infer import failure_reason, infer_batch
from bloodnet_ops.nightly.plan import plan_batches
from bloodnet_ops.nightly.records import (
    BatchCounts,
    DiscoveryResult,
    RunSummary,
    SiteCounts,
    Timings,
    ValidationSummary,
)
from bloodnet_ops.nightly.screen import screen
from bloodnet_ops.nightly.summarise import fail_run, summarise_run
from bloodnet_ops.nightly.validate import validate_and_record

__all__ = [
    "DEFAULT_BATCH", "DERIVED_DIR", "BatchCounts", "DiscoveryResult", "RunSummary",
    "SiteCounts", "Timings", "ValidationSummary", "default_output_uri", "discover",
    "dispose_engines", "engine", "excluded_prefix", "fail_run", "failure_reason", "infer_batch",
    "new_run_id", "night_run_id", "open_uri", "plan_batches", "screen", "summarise_run",
    "validate_and_record",
]
