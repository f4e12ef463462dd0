"""Step 1: list the source and enter new or changed objects in the manifest."""

from __future__ import annotations

import logging
import time

from bloodnet_ops.db import manifest, runs
from bloodnet_ops.db.upsert import MANIFEST_CHUNK, chunked
from bloodnet_ops.nightly.common import engine, excluded_prefix, list_under, new_run_id, open_uri
from bloodnet_ops.nightly.records import DiscoveryResult
from bloodnet_ops.storage import S3Config

log = logging.getLogger(__name__)


def discover(
    source_uri: str,
    db_url: str,
    *,
    prefix: str | None = None,
    run_id: str | None = None,
    rescan: bool = False,
    output_uri: str | None = None,
    dag_run_id: str | None = None,
    s3: S3Config | None = None,
) -> DiscoveryResult:
    """List the source and enter new or changed objects in the manifest as ``pending``.

    Also offered again: objects still ``pending`` from a run that died, objects this same
    ``run_id`` recorded before (a rerun of the night redoes its work), and with ``rescan`` every
    object under ``prefix`` (a backfill, e.g. with a new model). Opens the ``inference_runs`` row
    (``dag_run_id``: the Airflow run, when there is one).
    """
    t0 = time.perf_counter()
    run_id = run_id or new_run_id()
    source = open_uri(source_uri, s3=s3)
    db = engine(db_url)
    skip = excluded_prefix(source.uri, output_uri)
    listing = (o for o in list_under(source, prefix) if not (skip and o.key.startswith(skip)))
    n_listed = n_new = 0
    for chunk in chunked(listing, MANIFEST_CHUNK):  # memory stays flat
        n_listed += len(chunk)
        n_new += len(manifest.manifest_changes(db, source.uri, chunk))
        n_new += manifest.reoffer(db, source_uri=source.uri, keys=[o.key for o in chunk],
                                  run_id=run_id, rescan=rescan, prefix=prefix)
    runs.start_inference_run(db, run_id=run_id, source_uri=source.uri, dag_run_id=dag_run_id)
    result = DiscoveryResult(run_id, source.uri, n_listed, n_new, time.perf_counter() - t0)
    log.info("discovered %d new of %d objects (run %s)", result.n_new, result.n_listed, run_id)
    return result
