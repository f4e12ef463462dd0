"""``bloodnet validate``: discovery, series selection and validation of a source (no model).

With ``--json`` stdout carries exactly one JSON array (DESIGN.md §3): one object per study and
one per unreadable object (``study_uid`` null, ``key`` set). Rejections are verdicts, not
errors: the exit code is 0 whenever the source could be read.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections import Counter
from typing import Annotated

import typer

from bloodnet_ops.cli._common import check_database, emit_json, open_checked

log = logging.getLogger("bloodnet.cli.data")


def validate(
    source: Annotated[str, typer.Argument(help="A local folder or s3://bucket/prefix.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the DESIGN.md §3 JSON array.")
                        ] = False,
    db: Annotated[str | None, typer.Option(
        "--db", help="Persist the report to this results database (postgresql://...).")] = None,
    hu: Annotated[bool, typer.Option(help="Fetch pixels of passing series and check HU.")
                  ] = True,
    workers: Annotated[int, typer.Option(min=1, help="Concurrent GETs.")] = 16,
) -> None:
    """Validate every DICOM object under SOURCE and give one verdict per study."""
    from bloodnet_ops.headers import quiet_pydicom
    from bloodnet_ops.pipeline import validate_source
    from bloodnet_ops.records import unreadable_contract

    quiet_pydicom()
    src = open_checked(source)
    if db:
        check_database(db)
    if json_out:
        report = validate_source(src, hu_check=hu, workers=workers)
    else:
        report = _with_progress(src, hu, workers)
    if db:
        _persist(db, report, src.uri)
    if json_out:
        emit_json([s.contract() for s in report.studies]
                  + [unreadable_contract(u) for u in report.unreadable])
        return
    _print_summary(report)


def _with_progress(src, hu: bool, workers: int):
    from rich.console import Console
    from rich.progress import Progress

    from bloodnet_ops.pipeline import validate_source

    console = Console(stderr=True)
    with Progress(console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return validate_source(src, hu_check=hu, workers=workers, progress=progress)


def _persist(url: str, report, source_uri: str) -> None:
    from bloodnet_ops.db.repo import record_validation
    from bloodnet_ops.db.session import make_engine, migrate

    migrate(url)
    engine = make_engine(url)
    run_id = f"validate-{uuid.uuid4().hex[:12]}"
    try:
        counts = record_validation(engine, report, source_uri=source_uri, run_id=run_id)
    finally:
        engine.dispose()
    log.info("persisted validation run %s: %s", run_id, counts)


def _print_summary(report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    table = Table(title=f"{len(report.studies)} studies, {len(report.unreadable)} unreadable "
                        f"of {len(report.objects)} objects")
    for col in ("study", "site", "verdict", "reasons", "slices", "objects"):
        table.add_column(col)
    style = {"accept": "green", "accept_with_warning": "yellow", "reject": "red"}
    for s in report.studies:
        table.add_row(
            "…" + s.study_uid[-16:], s.site, f"[{style[s.verdict.value]}]{s.verdict.value}",
            ", ".join(r.value for r in s.reasons), str(s.n_slices), str(len(s.keys)),
        )
    console.print(table)
    verdicts = Counter(s.verdict.value for s in report.studies)
    reasons = Counter(r.value for s in report.studies for r in s.reasons)
    console.print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())))
    if reasons:
        console.print("reasons: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    if report.unreadable:
        details = Counter(u.detail for u in report.unreadable)
        console.print("unreadable: " + "; ".join(f"{k} ({v})" for k, v in details.most_common()))


def migrate(
    db: Annotated[str, typer.Option("--db", help="Results database URL (postgresql://...).",
                                    envvar="BLOODNET_DATABASE_URL")],
    roles: Annotated[bool, typer.Option(
        help="Also create the least-privilege roles and grants (sql/roles.sql; superuser).")
                     ] = False,
) -> None:
    """Build or upgrade the results database: every table and every dashboard view."""
    from bloodnet_ops.db.session import apply_sql, current_revision
    from bloodnet_ops.db.session import migrate as migrate_db
    from bloodnet_ops.resources import sql_file

    check_database(db)
    migrate_db(db)
    if roles:
        apply_sql(db, sql_file("roles.sql"))
    typer.echo(f"results database at revision {current_revision(db)}"
               f"{' with roles' if roles else ''}")


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("migrate")(migrate)
