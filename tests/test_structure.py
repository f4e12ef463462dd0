"""The shape of the package (issue 13): small modules, one data-access layer, no Airflow."""

from __future__ import annotations

import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "bloodnet_ops"
MAX_LINES = 500
#: SQL built or sent: SQLAlchemy constructs, text SQL, DBAPI calls.
SQL = re.compile(r"(?<![\w.])(text|select|insert|update|delete)\(|\.execute\(|exec_driver_sql")


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "migrations" not in p.parts)


def test_no_module_is_over_500_lines() -> None:
    long = {str(p.relative_to(PKG)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_sql_outside_the_data_access_layer() -> None:
    found = [
        f"{p.relative_to(PKG)}:{i}: {line.strip()}"
        for p in _modules() if "db" not in p.relative_to(PKG).parts[:1]
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if SQL.search(line) and not line.lstrip().startswith("#")
    ]
    assert found == []


def test_the_sql_pattern_finds_sql() -> None:  # the check above is not vacuous
    for line in ('conn.execute(text("SELECT 1"))', "q = select(t.c.a)", "insert(Model)",
                 "conn.exec_driver_sql('DROP VIEW v')"):
        assert SQL.search(line), line
    for line in ("mp.get_context('spawn')", "path.read_text()", "ax.text(0, 0, 's')"):
        assert not SQL.search(line), line


def test_the_package_never_imports_airflow() -> None:
    airflow = re.compile(r"^\s*(from|import)\s+airflow\b", re.MULTILINE)
    assert [str(p.relative_to(PKG)) for p in _modules() if airflow.search(p.read_text())] == []


def test_inference_reads_what_validation_chose() -> None:
    """No second header pass: the nightly job has no ``_studies_for`` and reads
    ``validation_results.series_objects`` through db.scoring."""
    nightly = "\n".join(p.read_text() for p in (PKG / "nightly").glob("*.py"))
    assert "_studies_for" not in nightly and "read_headers" not in nightly
    assert "scoring_items" in nightly


def test_suite_rows_are_typed_and_name_every_rule_column() -> None:
    import dataclasses

    from bloodnet_ops.validation import ROW_TYPES, SUITES

    for suite, rules in SUITES.items():
        names = {f.name for f in dataclasses.fields(ROW_TYPES[suite])}
        assert {r.column for r in rules} <= names, suite
        assert "study_uid" in names
