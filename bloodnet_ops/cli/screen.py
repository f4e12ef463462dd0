"""``bloodnet screen`` (the nightly job without Airflow) and ``bloodnet demo`` (end to end)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from bloodnet_ops.cli._common import check_database, check_model, emit_json, open_checked

log = logging.getLogger("bloodnet.cli.screen")


def screen(
    source: Annotated[str, typer.Argument(help="A local folder or s3://bucket/prefix.")],
    db: Annotated[str, typer.Option("--db", help="Results database URL (postgresql://...).",
                                    envvar="BLOODNET_DATABASE_URL")],
    model: Annotated[str | None, typer.Option(
        "--model", help="Weights (default: models/bloodnet.pt or $BLOODNET_MODEL).")] = None,
    outputs: Annotated[str | None, typer.Option(
        "--outputs", help="Where DICOM SEG/SR go (default: <source>/bloodnet-derived).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Studies per batch.")] = 16,
    prefix: Annotated[str | None, typer.Option(help="Only keys under this prefix.")] = None,
    site: Annotated[str | None, typer.Option(help="Only studies of this site.")] = None,
    rescan: Annotated[bool, typer.Option(
        help="Score every object again, not only new or changed ones.")] = False,
    dicom: Annotated[bool, typer.Option(help="Write DICOM SEG/SR outputs.")] = True,
    migrate: Annotated[bool, typer.Option(help="Migrate the database first.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")
                        ] = False,
) -> None:
    """Validate, score and persist new studies: the nightly job, in this process."""
    from bloodnet_ops import nightly
    from bloodnet_ops.db.session import migrate as migrate_db

    if not source.startswith("file://"):
        open_checked(source)
    model = str(check_model(model))
    check_database(db)
    if migrate:
        migrate_db(db)
    summary = nightly.screen(
        source, db, model, batch_size=batch_size, output_uri=outputs, prefix=prefix, site=site,
        rescan=rescan, write_dicom=dicom, progress=not json_out,
    )
    if json_out:
        emit_json(summary.to_xcom())
        return
    typer.echo(f"run {summary.run_id} on {summary.source_uri} (model {summary.model_version})")
    typer.echo(f"{'site':<16}{'studies':>8}{'rejected':>10}{'scored':>8}{'positive':>10}")
    for name, row in summary.per_site.items():
        typer.echo(f"{name:<16}{row.studies:>8}{row.rejected:>10}{row.scored:>8}"
                   f"{row.positive:>10}")
    typer.echo(f"unreadable objects: {summary.n_unreadable}; failed while scoring: "
               f"{summary.n_failed}")
    if summary.reasons:
        typer.echo("quarantine: " + ", ".join(f"{k} {v}" for k, v in summary.reasons.items()))
    t = summary.timings
    typer.echo(f"load {t.load_s:.1f}s, inference {t.infer_s:.1f}s, DICOM out "
               f"{t.write_s:.1f}s, run {t.run_wall_s:.1f}s")


def demo(
    studies: Annotated[int, typer.Option(min=1, help="Synthetic studies to generate.")] = 200,
    sites: Annotated[int, typer.Option(min=1, help="Hospitals (vendor profiles).")] = 6,
    out: Annotated[Path, typer.Option(help="Working folder (data, services).")] = Path("var/demo"),
    airflow_home: Annotated[Path, typer.Option(help="AIRFLOW_HOME for the demo.")
                            ] = Path("var/airflow"),
    matrix: Annotated[int, typer.Option(help="Image matrix (256 or 512).")] = 256,
    seed: Annotated[int, typer.Option(help="Data set seed.")] = 2019,
    batch_size: Annotated[int, typer.Option(min=1, help="Studies per mapped inference task.")
                          ] = 25,
    keep_services: Annotated[bool, typer.Option(
        "--keep-services", help="Leave PostgreSQL and SeaweedFS running afterwards.")] = False,
) -> None:
    """Start services, generate and upload a multi-site night, run the DAGs, print a report."""
    from bloodnet_ops.demo import run_demo

    try:
        run_demo(studies=studies, sites=sites, out=out, airflow_home=airflow_home,
                 matrix=matrix, seed=seed, batch_size=batch_size, keep_services=keep_services,
                 echo=typer.echo)
    except (FileNotFoundError, RuntimeError) as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    app.command("screen")(screen)
    app.command("demo")(demo)
