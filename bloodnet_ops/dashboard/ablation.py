"""Reading the ablation reports (``reports/ablation/*.json``) into tables for the Models page.

The reports are written by ``bloodnet ablation`` (:mod:`bloodnet_ops.model.ablation`: ``results``
is the per-variant table with AUC, CIs and the DeLong test against ``bloodnet``; ``data`` the
split summaries). This reader does not pin that shape: a list of records, or a mapping whose values are lists of records or records
keyed by variant name, each becomes a table; top-level scalars become a details list. Nested
mappings flatten to dotted column names (``auc.ci_low``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_COLUMNS = 18
MAX_ROWS = 200
MAX_FILES = 20


@dataclass
class Table:
    name: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Report:
    name: str
    details: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    error: str | None = None


def fmt(value: Any) -> str:
    """A cell value as text: floats to 4 significant decimals, short numeric lists inline."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and len(value) <= 4 and all(
        isinstance(v, int | float) for v in value
    ):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, list) and len(value) > 4:
        return f"({len(value)} items)"
    if isinstance(value, list | dict):
        out = json.dumps(value, default=str)
        return out if len(out) <= 80 else out[:79] + "…"
    return str(value)


def flatten(record: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``{"auc": {"value": 0.9, "ci": [0.8, 0.95]}}`` -> ``[("auc.value", "0.9000"), ...]``."""
    out: list[tuple[str, str]] = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and len(value) <= 12:
            out.extend(flatten(value, prefix=name + "."))
        else:
            out.append((name, fmt(value)))
    return out


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _is_keyed_records(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(v, dict) for v in value.values())
    )


def _table(name: str, records: list[dict[str, Any]]) -> Table:
    flat = [dict(flatten(r)) for r in records[:MAX_ROWS]]
    columns: list[str] = []
    for row in flat:
        columns.extend(c for c in row if c not in columns)
    columns = columns[:MAX_COLUMNS]
    return Table(name, columns, [[row.get(c, "") for c in columns] for row in flat])


def parse_report(name: str, doc: Any) -> Report:
    report = Report(name=name)
    if _is_records(doc):
        report.tables.append(_table(name, doc))
        return report
    if not isinstance(doc, dict):
        report.details.append(("value", fmt(doc)))
        return report
    for key, value in doc.items():
        if _is_records(value):
            report.tables.append(_table(key, value))
        elif _is_keyed_records(value):
            report.tables.append(
                _table(key, [{"name": k, **v} for k, v in value.items()])
            )
        else:
            report.details.append((key, fmt(value)))
    return report


def load_reports(folder: Path) -> list[Report]:
    """Every ``*.json`` report in ``folder`` (newest first); a broken file is shown as an error."""
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    reports = []
    for path in files[:MAX_FILES]:
        try:
            reports.append(parse_report(path.stem, json.loads(path.read_text())))
        except (OSError, ValueError) as exc:
            log.warning("ablation report %s unreadable: %s", path.name, type(exc).__name__)
            reports.append(Report(name=path.stem, error="could not be read as JSON"))
    return reports
