"""The public index of the data-access layer: one name for each writer and reader, which live in
one module per group of tables (``manifest``, ``validation``, ``runs``, ``findings``, ``scoring``,
``counts``; the shared upsert in ``upsert``). Callers write ``from bloodnet_ops.db import repo``.
"""

from __future__ import annotations

from bloodnet_ops.db.counts import CORE_TABLES, table_counts
from bloodnet_ops.db.findings import FINDING_KEY, FindingRow, findings_for_run, upsert_findings
from bloodnet_ops.db.manifest import (
    count_pending,
    iter_pending,
    manifest_changes,
    manifest_keys_for_studies,
    manifest_record,
)
from bloodnet_ops.db.runs import finish_inference_run, register_model_version, start_inference_run
from bloodnet_ops.db.upsert import MANIFEST_CHUNK, UNKNOWN_SITE, UPSERT_BATCH, chunked, jsonable
from bloodnet_ops.db.validation import record_validation

__all__ = [
    "CORE_TABLES",
    "FINDING_KEY",
    "MANIFEST_CHUNK",
    "UNKNOWN_SITE",
    "UPSERT_BATCH",
    "FindingRow",
    "chunked",
    "count_pending",
    "findings_for_run",
    "finish_inference_run",
    "iter_pending",
    "jsonable",
    "manifest_changes",
    "manifest_keys_for_studies",
    "manifest_record",
    "record_validation",
    "register_model_version",
    "start_inference_run",
    "table_counts",
    "upsert_findings",
]
