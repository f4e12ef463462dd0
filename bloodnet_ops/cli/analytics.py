"""``bloodnet audit``, ``bloodnet adjudicate`` and ``bloodnet drift``: analytics without Airflow.

With ``--json`` stdout carries exactly one JSON object (the issue's contract); logs go to stderr.
Without it a short human summary is printed.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from bloodnet_ops.cli._common import emit_json

log = logging.getLogger("bloodnet.cli.analytics")

DbOpt = Annotated[str, typer.Option("--db", help="Results database URL (postgresql://...).",
                                    envvar="BLOODNET_DATABASE_URL")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _date(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected YYYY-MM-DD, got {value!r}", param_hint=name) from None


def _fmt_ci(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def audit(
    db: DbOpt,
    reads: Annotated[str | None, typer.Option(
        "--reads", help="Reads file to import first (CSV or JSON lines; path or s3://bucket/key).")
    ] = None,
    json_out: JsonOpt = False,
    date_from: Annotated[str | None, typer.Option("--from", help="First study day (YYYY-MM-DD).")
                         ] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="Last study day (YYYY-MM-DD).")
                       ] = None,
    model_version: Annotated[str | None, typer.Option(
        "--model-version", help="Audit this model version (default: the newest).")] = None,
    reread_rate: Annotated[float, typer.Option(
        help="Share of each site's model negatives sampled for re-reading.")] = 0.05,
    reread_min: Annotated[int, typer.Option(help="Re-read sample size floor per site.")] = 2,
    reread_max: Annotated[int, typer.Option(help="Re-read sample size cap per site.")] = 50,
    seed: Annotated[int | None, typer.Option(help="Re-read sampling seed.")] = None,
    run_key: Annotated[str | None, typer.Option(
        help="Audit run key; the same key replaces that run (default: a new one).")] = None,
) -> None:
    """Join findings with radiology reads: discordance worklist and per-site figures with CIs."""
    from bloodnet_ops.audit.run import run_audit

    if reads is not None and not reads.startswith("s3://") and not Path(reads).is_file():
        raise typer.BadParameter(f"no such file: {reads}", param_hint="--reads")
    report = run_audit(
        db, reads=reads, date_from=_date(date_from, "--from"), date_to=_date(date_to, "--to"),
        model_version=model_version, reread_rate=reread_rate, reread_min=reread_min,
        reread_max=reread_max, seed=seed, run_key=run_key,
    )
    doc = report.contract()
    if json_out:
        emit_json(doc)
        return
    kinds = report.counts
    typer.echo(f"audit run {report.run_key} (model {report.model_version}): "
               f"{kinds.get('studies', 0)} studies, worklist {len(report.worklist)} "
               f"({kinds.get('missed_by_reader', 0)} missed by reader, "
               f"{kinds.get('missed_by_model', 0)} missed by model, "
               f"{kinds.get('reread_sample', 0)} re-read samples), "
               f"unmatched reads {report.unmatched_reads}")
    for site, fig in [*doc["sites"].items(), ("overall", doc["overall"])]:
        typer.echo(f"  {site:<12} n={fig['n']:<5} "
                   f"sens {_fmt_ci(fig['sensitivity'], fig['sensitivity_ci'])}  "
                   f"spec {_fmt_ci(fig['specificity'], fig['specificity_ci'])}  "
                   f"AUC {_fmt_ci(fig['auc'], fig['auc_ci'])}")


def adjudicate(
    db: DbOpt,
    study_uid: Annotated[str, typer.Argument(help="StudyInstanceUID of the worklist item.")],
    kind: Annotated[str, typer.Option(
        help="missed_by_reader | missed_by_model | reread_sample")],
    outcome: Annotated[str, typer.Option(
        help="confirmed_miss | true_positive | false_positive | true_negative | indeterminate "
             "| technical_failure")],
    note: Annotated[str, typer.Option(help="Free-text note (no patient identifiers).")] = "",
    reviewer: Annotated[str | None, typer.Option(
        help="Reviewer name (stored as a pseudonym).", envvar="BLOODNET_REVIEWER")] = None,
    force: Annotated[bool, typer.Option(
        help="Accept a study that is not on any worklist with that kind.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Record a reviewer's verdict on a worklist item; the next audit's figures use it."""
    from bloodnet_ops.audit.adjudicate import NotOnWorklist
    from bloodnet_ops.audit.adjudicate import adjudicate as record

    try:
        rec = record(db, study_uid, kind=kind, outcome=outcome, reviewer=reviewer, note=note,
                     require_worklist=not force)
    except (ValueError, NotOnWorklist) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if json_out:
        emit_json(rec.as_dict())
    else:
        typer.echo(f"recorded {rec.outcome} for {rec.study_uid} ({rec.kind})")


def drift(
    db: DbOpt,
    json_out: JsonOpt = False,
    reference_nights: Annotated[int, typer.Option(
        help="The first N nights of each site form the reference window.")] = 14,
    recent_nights: Annotated[int, typer.Option(
        help="The last K nights of each site form the recent window.")] = 7,
    reference_from: Annotated[str | None, typer.Option(
        help="Pin the reference period: first day (YYYY-MM-DD), with --reference-to.")] = None,
    reference_to: Annotated[str | None, typer.Option(
        help="Pin the reference period: last day (YYYY-MM-DD).")] = None,
    model_version: Annotated[str | None, typer.Option(
        "--model-version", help="Compare this model's scores (default: the newest).")] = None,
    run_key: Annotated[str | None, typer.Option(help="Drift run key (default: a new one).")
                       ] = None,
) -> None:
    """Compare each site's recent nights with its reference nights; store statistics and alert."""
    from bloodnet_ops.drift.monitor import run_drift
    from bloodnet_ops.drift.windows import WindowSpec

    try:
        spec = WindowSpec(reference_nights=reference_nights, recent_nights=recent_nights,
                          reference_from=_date(reference_from, "--reference-from"),
                          reference_to=_date(reference_to, "--reference-to"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    report = run_drift(db, reference=spec, model_version=model_version, run_key=run_key)
    if json_out:
        emit_json(report.contract())
        return
    typer.echo(f"drift run {report.run_key}: {len(report.sites)} sites compared, "
               f"{len(report.alerts)} alerts (webhook: {report.webhook})")
    for site, why in report.skipped_sites.items():
        typer.echo(f"  {site}: skipped, {why}")
    for site, rows in report.sites.items():
        worst = [r for r in rows if r.status != "ok"]
        typer.echo(f"  {site}: {len(rows)} statistics, {len(worst)} not ok")
        for r in worst:
            typer.echo(f"    {r.status:<5} {r.metric} {r.statistic}={r.value:.3g} "
                       f"(warn {r.threshold_warn:g}, alert {r.threshold_alert:g})")


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
    app.command("adjudicate")(adjudicate)
    app.command("drift")(drift)
