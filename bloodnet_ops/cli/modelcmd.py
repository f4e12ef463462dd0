"""``bloodnet train / eval / ablation / predict``: model work from the command line.

Heavy imports (torch, pydicom) happen inside the commands so ``bloodnet --help`` stays fast.
Progress bars and logs go to stderr; with ``--json`` stdout carries exactly one JSON document.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from bloodnet_ops.cli._common import check_model, emit_json, open_checked

log = logging.getLogger("bloodnet.model")

DataOpt = Annotated[Path, typer.Option("--data", help="data set folder (bloodnet synth layout)",
                                       exists=True, file_okay=False)]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: auto)")]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="prepared-volume cache folder "
                                               "(default $BLOODNET_CACHE or ~/.cache/bloodnet)")]


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate)
    app.command("ablation")(ablation)
    app.command("predict")(predict)
    app.command("calibrate")(calibrate)
    app.command("explain")(explain)


WidthsOpt = Annotated[str, typer.Option(help="encoder widths, comma-separated")]
DEFAULT_WIDTHS = "16,32,64,128,192"


def _train_config(variant: str, size: int, epochs: int, steps: int, batch: int, seed: int,
                  device: str | None, threads: int, widths: str):
    from bloodnet_ops.model.train import TrainConfig

    try:
        w = tuple(int(v) for v in widths.split(","))
    except ValueError:
        raise typer.BadParameter(f"--widths must be integers like 16,32,64,128; got {widths!r}"
                                 ) from None
    return TrainConfig(variant=variant, size=size, epochs=epochs, steps_per_epoch=steps,
                       batch_size=batch, seed=seed, device=device or "auto", threads=threads,
                       widths=w)


def train(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="checkpoint to write, e.g. models/x.pt")],
    variant: Annotated[str, typer.Option(help="bloodnet | independent | cls-only | seg-only")
                       ] = "bloodnet",
    epochs: Annotated[int, typer.Option(help="stage-1 epochs")] = 8,
    steps: Annotated[int, typer.Option(help="batches per epoch")] = 150,
    batch: Annotated[int, typer.Option(help="slices per batch")] = 16,
    size: Annotated[int, typer.Option(help="input matrix (pixels)")] = 128,
    seed: int = 0,
    val_frac: Annotated[float, typer.Option(help="share of studies held out for the "
                                            "threshold")] = 0.15,
    val_data: Annotated[Path | None, typer.Option(help="separate validation data set")] = None,
    stack_data: Annotated[Path | None, typer.Option(help="separate data set for the study head "
                                                    "(stage 2)")] = None,
    device: DeviceOpt = None,
    threads: Annotated[int, typer.Option(help="CPU threads for torch")] = 2,
    widths: WidthsOpt = DEFAULT_WIDTHS,
    study_epochs: Annotated[int, typer.Option(help="epochs of the study (GRU) head")] = 15,
    augmented_passes: Annotated[int, typer.Option(help="augmented passes over the training "
                                                  "studies for the study head")] = 1,
    init: Annotated[Path | None, typer.Option(help="checkpoint to fine-tune from")] = None,
    lr: Annotated[float, typer.Option(help="peak learning rate (AdamW)")] = 2e-3,
    pos_frac: Annotated[float, typer.Option(help="share of each batch with blood")] = 0.4,
    hard_frac: Annotated[float, typer.Option(help="share of blood-free samples drawn from the "
                                             "hard-negative pool")] = 0.5,
    mine_every: Annotated[int, typer.Option(help="steps between hard-negative mining rounds "
                                            "(0: no mining)")] = 300,
    extra_data: Annotated[list[Path] | None, typer.Option(
        "--extra-data", help="more training folders (repeatable), e.g. another matrix size")
                          ] = None,
    cache: CacheOpt = None,
) -> None:
    """Train a variant on a synthetic (or converted real) data set and write a checkpoint."""
    from bloodnet_ops.model.data import build_cache, split_studies
    from bloodnet_ops.model.net import list_models
    from bloodnet_ops.model.train import train_to_file

    if variant not in list_models():
        raise typer.BadParameter(f"unknown variant {variant!r}; expected one of {list_models()}")
    cfg = _train_config(variant, size, epochs, steps, batch, seed, device, threads, widths)
    cfg.study_epochs = study_epochs
    cfg.augmented_passes = augmented_passes
    cfg.init = str(init) if init else None
    cfg.lr = lr
    cfg.pos_frac, cfg.hard_frac, cfg.mine_every = pos_frac, hard_frac, mine_every
    studies = build_cache(data, cache, size=size)
    if val_data is not None:
        train_set, val_set = studies, build_cache(val_data, cache, size=size)
    else:
        train_set, val_set = split_studies(studies, val_frac=val_frac, seed=seed)
    for extra in extra_data or []:
        train_set += build_cache(extra, cache, size=size)
    stack = build_cache(stack_data, cache, size=size) if stack_data else None
    res, sha = train_to_file(train_set, val_set, cfg, out, stack=stack)
    auc = "n/a" if res.val_auc is None else f"{res.val_auc:.4f}"
    typer.echo(f"wrote {out} (sha256 {sha[:12]}): validation AUC {auc}, threshold "
               f"{res.threshold:.4f}, {res.seconds:.0f}s", err=True)


def evaluate(
    data: DataOpt,
    model: Annotated[Path | None, typer.Option("--model", help="checkpoint (default: shipped)")
                     ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
    boot: Annotated[int, typer.Option(help="bootstrap replicates")] = 2000,
    target_sensitivity: Annotated[float | None, typer.Option(
        "--target-sensitivity", min=0.01, max=1.0,
        help="also report the threshold reaching this sensitivity here")] = None,
    reliability: Annotated[Path | None, typer.Option(
        "--reliability", help="write the reliability diagram (PNG) here")] = None,
    device: DeviceOpt = None,
    cache: CacheOpt = None,
) -> None:
    """Study AUC with a 95% bootstrap CI, the operating point, calibration (ECE, reliability
    diagram), per-site AUC, Dice, volume error."""
    from bloodnet_ops.model.evaluate import evaluate as run_eval
    from bloodnet_ops.model.predictor import default_model_path

    rep = run_eval(data, model or default_model_path(), device=device, cache_root=cache,
                   n_boot=boot, target_sensitivity=target_sensitivity, reliability=reliability)
    if as_json:
        emit_json(rep)
        return
    auc = rep["study_auc"]
    op = rep["operating_point"]
    typer.echo(f"{rep['model_version']} on {rep['studies']} studies "
               f"({rep['positive_studies']} ICH)")
    if auc:
        typer.echo(f"study AUC {auc['auc']:.4f} (95% CI {auc['ci_low']:.4f}-{auc['ci_high']:.4f})")
    typer.echo(f"at threshold {op['threshold']:.4f}: sensitivity "
               f"{op['sensitivity']['estimate']:.3f}, specificity "
               f"{op['specificity']['estimate']:.3f}")
    typer.echo(f"ECE {rep['calibration']['ece']:.4f}"
               + (f" (reliability diagram {reliability})" if reliability else ""))
    if "at_target" in rep:
        t = rep["at_target"]
        typer.echo(f"sensitivity >= {target_sensitivity}: threshold {t['threshold']:.4f}, "
                   f"sensitivity {t['sensitivity']['estimate']:.3f}, specificity "
                   f"{t['specificity']['estimate']:.3f}")
    for site, blk in rep["per_site"].items():
        typer.echo(f"  {site}: AUC {blk['auc'] if blk['auc'] is None else round(blk['auc'], 4)}"
                   f" (n={blk['n']})")
    seg, vol = rep["segmentation"], rep["volume_ml"]
    typer.echo(f"Dice mean {seg['dice_mean']}, volume MAE {vol['mae']} mL")


def ablation(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="report folder")],
    epochs: int = 4,
    steps: int = 100,
    batch: int = 16,
    size: int = 128,
    seed: int = 0,
    variants: Annotated[str | None, typer.Option(help="comma-separated subset")] = None,
    test_data: Annotated[Path | None, typer.Option(help="held-out test set (default: split "
                                                   "--data)")] = None,
    stack_data: Annotated[Path | None, typer.Option(help="data set for the study heads")] = None,
    boot: int = 2000,
    device: DeviceOpt = None,
    threads: int = 2,
    widths: WidthsOpt = DEFAULT_WIDTHS,
    augmented_passes: int = 0,
    seeds: Annotated[str | None, typer.Option(help="comma-separated seeds: one ablation each, "
                                              "summarised as mean ± sd")] = None,
    cache: CacheOpt = None,
) -> None:
    """Train the four variants on the same data and budget; compare them on the same studies."""
    from bloodnet_ops.model.ablation import run_ablation, run_ablation_seeds

    cfg = _train_config("bloodnet", size, epochs, steps, batch, seed, device, threads, widths)
    cfg.augmented_passes = augmented_passes
    cfg.mine_every = max(25, epochs * steps // 4)  # the recipe's mining, scaled to the budget
    names = [v.strip() for v in variants.split(",")] if variants else None
    kwargs = {"variants": names, "n_boot": boot, "cache_root": cache, "test_dir": test_data,
              "stack_dir": stack_data}
    if seeds:
        try:
            seed_list = [int(v) for v in seeds.split(",")]
        except ValueError:
            raise typer.BadParameter(f"--seeds must be integers like 0,1,2; got {seeds!r}"
                                     ) from None
        sdoc = run_ablation_seeds(data, out, base=cfg, seeds=seed_list, **kwargs)
        for r in sdoc["summary"]:
            typer.echo(f"{r['variant']:12s} AUC {r['auc_mean']:.4f} ± {r['auc_sd']:.4f}",
                       err=True)
        typer.echo(f"report: {out / 'ablation.md'}", err=True)
        return
    doc = run_ablation(data, out, base=cfg, **kwargs)
    for r in doc["results"]:
        typer.echo(f"{r['variant']:12s} AUC {r['auc']:.4f} "
                   f"[{r['auc_ci'][0]:.4f}, {r['auc_ci'][1]:.4f}]", err=True)
    typer.echo(f"report: {out / 'ablation.md'}", err=True)


def _volumes(source: Any, studies: list, failed: dict[str, str]) -> Iterator[tuple]:
    """Load each accepted study lazily (run inside the Predictor's loading thread). A study whose
    pixels cannot be loaded is recorded in ``failed`` and skipped, never fatal for the rest."""
    from bloodnet_ops.volumes import load_study_volume

    for study in studies:
        try:
            vol = load_study_volume(source, study)
        except Exception as exc:  # noqa: BLE001 - one bad study must not stop the night
            log.warning("study could not be loaded: %s", type(exc).__name__)
            failed[study.study_uid] = "pixel_decode_failed"
            continue
        yield study.study_uid, study.series_uid, vol


def predict_source(source_uri: str, model: Path | None = None, device: str | None = None
                   ) -> list[dict[str, Any]]:
    """Validation plus inference over a source: the DESIGN.md §3 JSON objects, nothing written."""
    from bloodnet_ops.model.predictor import Predictor
    from bloodnet_ops.pipeline import validate_source
    from bloodnet_ops.reasons import Reason, Verdict
    from bloodnet_ops.records import unreadable_contract

    src = open_checked(source_uri)
    model = check_model(model)
    report = validate_source(src)
    accepted = [s for s in report.studies if s.verdict != Verdict.REJECT and s.series_uid]
    findings: dict[str, Any] = {}
    failed: dict[str, str] = {}
    if accepted:
        predictor = Predictor(model, device)
        for f in predictor.predict(_volumes(src, accepted, failed)):
            findings[f.study_uid] = f
    out = []
    for study in report.studies:
        doc = study.contract()
        f = findings.get(study.study_uid)
        if study.study_uid in failed:
            doc["verdict"] = Verdict.REJECT.value
            doc["reasons"] = sorted(set(doc["reasons"]) | {Reason.PIXEL_DECODE_FAILED.value})
        if f is None:
            doc.update(probability=None, positive=None, volume_ml=None, subtypes=None)
        else:
            doc.update(probability=round(f.probability, 6), positive=bool(f.positive),
                       volume_ml=round(f.volume_ml, 2),
                       subtypes={k: round(v, 4) for k, v in f.subtypes.items()})
        out.append(doc)
    out += [unreadable_contract(u) for u in report.unreadable]
    return out


def predict(
    source: Annotated[str, typer.Argument(help="local folder or s3://bucket/prefix")],
    model: Annotated[Path | None, typer.Option("--model", help="checkpoint (default: shipped)")
                     ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON array on stdout")] = False,
    device: DeviceOpt = None,
) -> None:
    """Validate a source and score every accepted study; prints findings, writes nothing."""
    docs = predict_source(source, model, device)
    if as_json:
        emit_json(docs)
        return
    for d in docs:
        if d["study_uid"] is None:
            typer.echo(f"unreadable  {d['key']}  {','.join(d['reasons'])}")
            continue
        p = "-" if d["probability"] is None else f"{d['probability']:.3f}"
        flag = "" if d["positive"] is None else ("ICH" if d["positive"] else "no ICH")
        vol = "" if d["volume_ml"] is None else f"{d['volume_ml']:.1f} mL"
        typer.echo(f"{d['study_uid']}  {d['site']}  {d['verdict']}  p={p}  {flag}  {vol}  "
                   f"{','.join(d['reasons'])}")


def calibrate(
    data: Annotated[list[Path], typer.Option("--data", help="selection set folder(s) "
                                             "(labels.csv layout, repeatable): another "
                                             "generator than training, never reported on",
                                             exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="calibrated checkpoint to write")],
    model: Annotated[Path | None, typer.Option("--model", help="checkpoint (default: shipped)")
                     ] = None,
    method: Annotated[str, typer.Option(help="platt | temperature | isotonic")] = "platt",
    target_sensitivity: Annotated[float, typer.Option(
        "--target-sensitivity", min=0.01, max=1.0,
        help="the stored threshold reaches this sensitivity on the selection set")] = 0.95,
    name: Annotated[str | None, typer.Option(help="the selection set's name in the checkpoint")
                    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
    device: DeviceOpt = None,
    cache: CacheOpt = None,
) -> None:
    """Fit the probability calibration and the stored threshold on a selection set."""
    from bloodnet_ops.model.predictor import default_model_path
    from bloodnet_ops.model.selection import calibrate_checkpoint

    rep = calibrate_checkpoint(model or default_model_path(), data, out, method=method,
                               target_sensitivity=target_sensitivity, device=device,
                               cache_root=cache, name=name or "+".join(d.name for d in data))
    if as_json:
        emit_json(rep)
        return
    typer.echo(f"wrote {out}: {method} calibration on {rep['studies']} studies, ECE "
               f"{rep['ece_before']:.4f} -> {rep['ece_after']:.4f}; threshold "
               f"{rep['threshold']:.4f} (sensitivity {rep['sensitivity']:.3f}, specificity "
               f"{rep['specificity']:.3f} on the selection set)")


def explain(
    source: Annotated[str, typer.Argument(help="local folder or s3://bucket/prefix")],
    out: Annotated[Path, typer.Option("--out", help="folder for the key images",
                                      file_okay=False)],
    model: Annotated[Path | None, typer.Option("--model", help="checkpoint (default: shipped)")
                     ] = None,
    only: Annotated[str | None, typer.Option(
        "--only", help="comma-separated study UIDs to explain (e.g. the false positives)")
                    ] = None,
    device: DeviceOpt = None,
) -> None:
    """Write one key image per scored study (slices with the most blood, brain window, mask
    outlined, probability and volume; no PHI) and an index.json."""
    import json

    import numpy as np

    from bloodnet_ops import keyimage
    from bloodnet_ops.model.predictor import Predictor
    from bloodnet_ops.pipeline import validate_source
    from bloodnet_ops.reasons import Verdict

    src = open_checked(source)
    model = check_model(model)
    report = validate_source(src)
    accepted = [s for s in report.studies if s.verdict != Verdict.REJECT and s.series_uid]
    if only:
        wanted = {u.strip() for u in only.split(",") if u.strip()}
        accepted = [s for s in accepted if s.study_uid in wanted]
    out.mkdir(parents=True, exist_ok=True)
    index = []
    failed: dict[str, str] = {}
    predictor = Predictor(model, device) if accepted else None
    for uid, series_uid, vol in _volumes(src, accepted, failed):
        assert predictor is not None
        findings, masks = predictor.predict_masks([(uid, series_uid, vol)])
        f, blood = findings[0], masks[0]
        png = keyimage.render(np.asarray(vol.hu, dtype=np.float32), blood,
                              probability=f.probability, positive=f.positive,
                              volume_ml=f.volume_ml)
        name = f"{uid}.png"
        (out / name).write_bytes(png)
        index.append({"study_uid": uid, "series_uid": series_uid, "file": name,
                      "probability": round(f.probability, 6), "positive": bool(f.positive),
                      "volume_ml": round(f.volume_ml, 2)})
    (out / "index.json").write_text(json.dumps(index, indent=1))
    typer.echo(f"wrote {len(index)} key images to {out} ({len(report.studies) - len(index)} "
               f"studies not scored)", err=True)
