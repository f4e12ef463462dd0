"""``bloodnet synth``: write a synthetic multi-site head-CT data set, and/or a preview sheet."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from bloodnet_ops.cli._common import emit_json

log = logging.getLogger("bloodnet.synth")

MATRICES = (64, 128, 256, 384, 512)


def synth(
    out: Annotated[Path | None, typer.Option("--out", help="data set folder to write")] = None,
    studies: Annotated[int, typer.Option("--studies", min=1, help="number of studies")] = 20,
    sites: Annotated[int, typer.Option("--sites", min=1, help="number of hospital sites")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="same seed, same UIDs and pixels")] = 0,
    positive_rate: Annotated[float, typer.Option("--positive-rate", min=0.0, max=1.0)] = 0.5,
    matrix: Annotated[int, typer.Option("--matrix", help="64, 128, 256, 384 or 512")] = 256,
    reads_miss_rate: Annotated[float, typer.Option("--reads-miss-rate", min=0.0, max=1.0)] = 0.05,
    fault_rate: Annotated[float, typer.Option(
        "--fault-rate", min=0.0, max=1.0, help="fraction of studies made into bad inputs")] = 0.0,
    nights: Annotated[int | None, typer.Option(
        "--nights", min=1, help="StudyDates spread over this many days from 2025-03-03 "
        "(default: about 12 studies a night)")] = None,
    drift_site: Annotated[str | None, typer.Option(
        "--drift-site", help="inject drift into this site (e.g. site-b)")] = None,
    drift_from: Annotated[str | None, typer.Option(
        "--drift-from", help="first drifted StudyDate, YYYY-MM-DD")] = None,
    drift_kind: Annotated[str, typer.Option(
        "--drift-kind", help="scanner | population | thin-slices")] = "scanner",
    workers: Annotated[int | None, typer.Option("--workers", help="processes (default: CPUs)")
                       ] = None,
    preview: Annotated[Path | None, typer.Option(
        "--preview", help="also write a contact sheet PNG (alone: only the sheet)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON summary on stdout")
                       ] = False,
) -> None:
    """Write a synthetic non-contrast head-CT data set (DESIGN.md §4)."""
    from bloodnet_ops.synth import generate_dataset
    from bloodnet_ops.synth.drift import DRIFT_KINDS, parse_date
    from bloodnet_ops.synth.preview import write_preview

    if out is None and preview is None:
        raise typer.BadParameter("give --out DIR, --preview FILE.png, or both")
    if matrix not in MATRICES:
        raise typer.BadParameter(f"--matrix must be one of {MATRICES}, got {matrix}")
    if (drift_site is None) != (drift_from is None):
        raise typer.BadParameter("--drift-site and --drift-from go together")
    if drift_kind not in DRIFT_KINDS:
        raise typer.BadParameter(f"--drift-kind must be one of {', '.join(DRIFT_KINDS)}")
    if drift_from is not None:
        try:
            parse_date(drift_from)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    doc: dict[str, object] = {}
    if out is not None:
        try:
            summary = generate_dataset(
                out, studies=studies, sites=sites, seed=seed, positive_rate=positive_rate,
                matrix=matrix, reads_miss_rate=reads_miss_rate, fault_rate=fault_rate,
                workers=workers, progress=True, nights=nights, drift_site=drift_site,
                drift_from=drift_from, drift_kind=drift_kind,
            )
        except ValueError as exc:  # a bad combination: unknown drift site, date out of range
            raise typer.BadParameter(str(exc)) from exc
        if drift_site is not None:
            log.info("synth: %s drift injected into %s from %s (%d studies) -> drift.json",
                     drift_kind, drift_site, drift_from, summary.counts["drifted"])
        log.info("synth: %d studies (%d positive) at %d sites in %.1f s -> %s",
                 summary.counts["studies"], summary.counts["positives"], len(summary.sites),
                 summary.seconds, out)
        doc = {"counts": summary.counts, "sites": summary.sites,
               "seconds": round(summary.seconds, 2),
               "paths": {k: str(v) for k, v in summary.paths.items()}}
    if preview is not None:
        write_preview(preview, seed=seed, matrix=matrix)
        log.info("synth: preview -> %s", preview)
        doc["preview"] = str(preview)
    if as_json:
        emit_json(doc)


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
