"""A contact sheet of generated slices in the brain window, to check by eye that the phantom looks
like a head CT: one row per study (a negative with mimics, then one positive per subtype)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bloodnet_ops.keyimage import BRAIN_WINDOW, outline
from bloodnet_ops.keyimage import window_u8 as window
from bloodnet_ops.synth.plan import plan_studies
from bloodnet_ops.synth.study import RenderedStudy, render_study
from bloodnet_ops.synth.tissue import Subtype

BONE_WINDOW = (600.0, 2800.0)
_ROWS: tuple[Subtype | None, ...] = (None, *Subtype)


def preview_studies(seed: int, matrix: int = 256) -> list[RenderedStudy]:
    """A negative carrying mimics and one positive per subtype, each lesion big enough to see
    (a few seeds are tried per row)."""
    plans = plan_studies(studies=len(_ROWS) * 6, sites=len(_ROWS), seed=seed, positive_rate=0.0,
                         matrix=matrix, fault_rate=0.0)
    out = []
    for r, st in enumerate(_ROWS):
        best: RenderedStudy | None = None
        for k in range(6):
            plan = replace(plans[r * 6 + k], positive=st is not None, lead=st,
                           strong_mimics=st is None)
            rs = render_study(plan, lesions=[st] if st is not None else None)
            if st is None or rs.volume_ml() >= 6.0:
                best = rs
                break
            if best is None or rs.volume_ml() > best.volume_ml():
                best = rs
        assert best is not None
        out.append(best)
    return out


def _levels(rs: RenderedStudy) -> list[int]:
    """Skull base, posterior fossa (tentorium, sinuses, petrous streaks), basal ganglia,
    ventricles, convexity, vertex (falx and sagittal sinus, tangential skull), plus the slice
    with the most blood: the levels where normal anatomy mimics blood."""
    z = rs.geometry.positions
    top = z[-1]
    picks = [top - d for d in (120.0, 100.0, 85.0, 70.0, 35.0, 22.0)]
    idx = [int(np.argmin(np.abs(z - t))) for t in picks]
    area = (rs.labels > 0).sum(axis=(1, 2))
    idx.append(int(np.argmax(area)) if area.any() else int(np.argmin(np.abs(z - (top - 60)))))
    return idx


def _title(rs: RenderedStudy) -> str:
    prof = rs.profile
    head = f"{prof.manufacturer} {prof.model} | {rs.geometry.thickness:g} mm | {prof.soft_kernel}"
    if not rs.subtypes:
        return f"NEGATIVE (mimics) | {head}"
    kinds = ", ".join(f"{les.subtype.name} {les.kind}" for les in rs.lesions)
    return f"{kinds}: {rs.volume_ml():.1f} mL | {head}"


def contact_sheet(studies: list[RenderedStudy], path: Path, *, tile: int = 256) -> Path:
    """Write a PNG: per study seven brain-window slices, the blood slice again with the mask
    outlined in red, and a bone-window slice of the skull base."""
    font = ImageFont.load_default(size=13)
    bar = 20
    ncol = 9
    sheet = Image.new("RGB", (ncol * tile, len(studies) * (tile + bar)), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for r, rs in enumerate(studies):
        y0 = r * (tile + bar)
        draw.text((4, y0 + 3), _title(rs), fill=(255, 255, 0), font=font)
        levels = _levels(rs)
        tiles = [Image.fromarray(window(rs.soft[k], *BRAIN_WINDOW)).convert("RGB")
                 for k in levels]
        kb = levels[-1]
        grey = window(rs.soft[kb], *BRAIN_WINDOW)
        rgb = np.stack([grey] * 3, axis=-1)
        m = rs.labels[kb] > 0
        edge = outline(m)
        rgb[edge] = (255, 0, 0)
        tiles.append(Image.fromarray(rgb))
        tiles.append(Image.fromarray(window(rs.bone[levels[0]], *BONE_WINDOW)).convert("RGB"))
        names = ["base", "post fossa", "BG", "vent", "convex", "vertex", "blood", "mask",
                 "bone W"]
        for c, (im, name) in enumerate(zip(tiles, names, strict=True)):
            sheet.paste(im.resize((tile, tile), Image.BILINEAR), (c * tile, y0 + bar))
            z = rs.geometry.positions[levels[min(c, 6)] if c < 8 else levels[0]]
            draw.text((c * tile + 4, y0 + bar + 3), f"{name} z={z:.0f}", fill=(0, 255, 0),
                      font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def write_preview(path: Path, *, seed: int, matrix: int = 256) -> Path:
    """Render the preview studies and their contact sheet."""
    return contact_sheet(preview_studies(seed, matrix), path)
