"""Things that look like blood and are not: calcifications, a dense venous sinus, beam hardening
and partial-volume bone.

Partial-volume bone needs no code of its own: slices are slabs averaged from sub-slices
(:mod:`.study`), so the vertex and the skull base give the real thing. The dense sinus is a density
of the anatomy (:attr:`AnatomyParams.venous_hu`), set here when planned.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bloodnet_ops.synth.anatomy import Anatomy
from bloodnet_ops.synth.brain import paint_ellipsoid
from bloodnet_ops.synth.geometry import HeadCoords
from bloodnet_ops.synth.headparams import AnatomyParams, falx_bottom
from bloodnet_ops.synth.tissue import Tissue


@dataclass(frozen=True)
class MimicPlan:
    """Which mimics a study shows, and how strongly."""

    pineal: float  #: calcification HU, 0 = none
    choroid: float
    basal_ganglia: float
    falx: float
    dense_sinus: float  #: venous HU if dense (65-78), 0 = normal
    plaques: int  #: calcified dural plaques along the inner table (150-600 HU)
    streak_hu: float  #: depth of the dark band between the petrous bones
    streak_lines: int  #: radial streaks per skull-base slice


def plan_mimics(rng: np.random.Generator, *, strong: bool) -> MimicPlan:
    """``strong``: a negative chosen to carry the hard mimics (most negatives are)."""
    k = 1.6 if strong else 1.0

    def calc(prob: float, lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi)) if rng.random() < min(1.0, prob * k) else 0.0

    return MimicPlan(
        pineal=calc(0.45, 110, 650),
        choroid=calc(0.4, 100, 400),
        basal_ganglia=calc(0.12, 100, 260),
        falx=calc(0.12, 150, 700),
        dense_sinus=float(rng.uniform(65, 78)) if rng.random() < 0.2 * k else 0.0,
        plaques=int(rng.integers(1, 5)) if rng.random() < 0.15 * k else 0,
        streak_hu=float(rng.uniform(12, 45) if strong or rng.random() < 0.5 else rng.uniform(3, 12)),
        streak_lines=int(rng.integers(1, 5)),
    )


def with_dense_sinus(p: AnatomyParams, m: MimicPlan) -> AnatomyParams:
    return replace(p, venous_hu=m.dense_sinus) if m.dense_sinus else p


def paint_calcifications(an: Anatomy, hc: HeadCoords, m: MimicPlan,
                         rng: np.random.Generator) -> None:
    """Small dense foci at their typical places (in place): pineal 110-650 HU, choroid plexus in
    the atria 100-400, globus pallidus 100-260, falx 150-700, dural plaques 150-600."""
    lm, p = an.landmarks, an.params

    def blob(c: tuple[float, float, float], r: float, hu: float) -> None:
        rr = (r * rng.uniform(0.8, 1.2), r * rng.uniform(0.8, 1.2), r * rng.uniform(0.8, 1.2))
        paint_ellipsoid(hc, an.hu, an.tissue, c, rr, hu, Tissue.CALCIFICATION)

    if m.pineal and "pineal" in lm:
        blob(lm["pineal"], rng.uniform(1.8, 4.0), m.pineal)
    if m.choroid:
        for sd in ("l", "r"):
            if f"atrium_{sd}" in lm and rng.random() < 0.85:
                a = lm[f"atrium_{sd}"]
                blob((a[0], a[1] + 2.0, a[2] - 1.0), rng.uniform(2.0, 4.0), m.choroid)
    if m.basal_ganglia:
        for sd in ("l", "r"):
            if f"gp_{sd}" in lm:
                g = lm[f"gp_{sd}"]
                for _ in range(int(rng.integers(1, 4))):
                    c = (g[0] + rng.normal(0, 2), g[1] + rng.normal(0, 3), g[2] + rng.normal(0, 2))
                    blob(c, rng.uniform(1.2, 2.5), m.basal_ganglia)
    if m.falx:
        v0 = float(rng.uniform(-0.4, 0.3) * p.b)
        w0 = float(falx_bottom(np.float32(v0), p)) + rng.uniform(8, 30)
        paint_ellipsoid(hc, an.hu, an.tissue, (0.0, v0, w0),
                        (1.2, rng.uniform(4, 10), rng.uniform(2, 6)), m.falx,
                        Tissue.CALCIFICATION)
    for _ in range(m.plaques):
        _dural_plaque(an, hc, rng)


def _dural_plaque(an: Anatomy, hc: HeadCoords, rng: np.random.Generator) -> None:
    """A flat calcified plaque (150-600 HU) on the inner surface of the dura over the
    convexity, 1-2 mm thick and 4-12 mm across."""
    p = an.params
    az, el = rng.uniform(-np.pi, np.pi), rng.uniform(0.1, 1.2)
    d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    t = 1.0 / np.sqrt((d[0] / p.a) ** 2 + (d[1] / p.b) ** 2 + (d[2] / p.c) ** 2)
    c = d * (t - 1.5)
    r = rng.uniform(2.0, 6.0)
    yaw = float(np.degrees(np.arctan2(d[1], d[0])))
    paint_ellipsoid(hc, an.hu, an.tissue, tuple(c.tolist()), (rng.uniform(0.6, 1.0), r, r),
                    float(rng.uniform(150, 600)), Tissue.CALCIFICATION, yaw=yaw)
