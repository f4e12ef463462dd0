"""Acute intracranial blood in its five real shapes, with ground-truth masks.

- EDH: a biconvex lens against the inner table, limited in extent (sutures), often temporal.
- SDH: a crescent along the convexity following the inner table (crosses sutures, not the
  midline); also along the falx or the tentorium; sometimes acute-on-chronic with a level.
- SAH: hyperdense CSF in sulci, the Sylvian fissures or the basal cisterns.
- IPH: a round or lobulated blob with a hypodense oedema rim (deep, lobar, cerebellar, pontine).
- IVH: blood layering in the dependent (posterior) horns, or a cast of the ventricles.

A lesion is planned first (:func:`plan_lesions`, which also sets the mass effect) and drawn after
the anatomy (:func:`render_lesions`), because its shape follows the tissue around it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bloodnet_ops.synth.anatomy import Anatomy
from bloodnet_ops.synth.geometry import Box, HeadCoords, smooth_field
from bloodnet_ops.synth.headparams import (
    AnatomyParams,
    falx_bottom,
    midline_u,
    petrous_line,
    tentorium_w,
)
from bloodnet_ops.synth.tissue import INTRACRANIAL, PARENCHYMA, Subtype, Tissue

Vec = tuple[float, float, float]
_INTRA = np.array([int(t) for t in INTRACRANIAL if t != Tissue.SINUS], dtype=np.uint8)
_PAREN = np.array([int(t) for t in (*PARENCHYMA, Tissue.CSF)], dtype=np.uint8)

#: How often each subtype leads a positive study (SDH and IPH are the common ones).
LEAD_WEIGHTS: dict[Subtype, float] = {
    Subtype.EDH: 0.12, Subtype.SDH: 0.3, Subtype.SAH: 0.22, Subtype.IPH: 0.24, Subtype.IVH: 0.12,
}
#: Subtypes that tend to come together with a lead subtype.
COMPANIONS: dict[Subtype, tuple[Subtype, ...]] = {
    Subtype.EDH: (Subtype.SDH, Subtype.SAH),
    Subtype.SDH: (Subtype.SAH, Subtype.IPH, Subtype.SDH),
    Subtype.SAH: (Subtype.IVH, Subtype.SDH, Subtype.IPH),
    Subtype.IPH: (Subtype.IVH, Subtype.SAH, Subtype.SDH),
    Subtype.IVH: (Subtype.IPH, Subtype.SAH),
}


@dataclass(frozen=True)
class Lesion:
    """One planned hemorrhage; sizes in mm, density in HU."""

    subtype: Subtype
    kind: str  #: variant, e.g. "temporal", "convexity", "falcine", "basal", "deep", "layering"
    side: float  #: +1 patient left, -1 right
    anchor: Vec  #: head-coordinate direction (surface lesions) or centre (others)
    size: Vec  #: subtype-specific extents
    hu: float
    mixed: float  #: 0 = homogeneous; else the fraction / strength of a second density
    shape: float  #: subtype-specific shape parameter
    target_ml: float


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _unit(v: np.ndarray | Vec) -> Vec:
    a = np.asarray(v, dtype=np.float64)
    return tuple((a / np.linalg.norm(a)).tolist())  # type: ignore[return-value]


def _acute_hu(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Blood density: clotted acute blood in ``[lo, hi]``; one lesion in six is near-isodense
    (33-50 HU: an anaemic patient, or hyperacute unclotted blood), and one in twenty-five
    hypodense (25-33 HU), so "denser than brain" is not the only sign of blood."""
    r = rng.random()
    if r < 0.04:
        return float(rng.uniform(25, 33))
    return float(rng.uniform(33, 50) if r < 0.2 else rng.uniform(lo, hi))


def _direction(rng: np.random.Generator, side: float, az: tuple[float, float],
               el: tuple[float, float]) -> Vec:
    """A direction from the head centre: az is the angle from lateral towards posterior (rad),
    el the elevation (rad)."""
    a, e = rng.uniform(*az), rng.uniform(*el)
    return _unit((side * np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)))


def plan_lesions(
    rng: np.random.Generator, subtypes: list[Subtype], p: AnatomyParams
) -> list[Lesion]:
    """Sizes, places and densities of the lesions of one positive study."""
    out = []
    for st in subtypes:
        side = 1.0 if rng.random() < 0.5 else -1.0
        out.append(_PLANNERS[st](rng, side, p))
    return out


def _plan_edh(rng: np.random.Generator, side: float, p: AnatomyParams) -> Lesion:
    kind = str(rng.choice(["temporal", "frontal", "parietal", "occipital"], p=[.5, .2, .2, .1]))
    az, el = {"temporal": ((-0.45, 0.35), (-0.3, 0.15)), "frontal": ((-1.35, -0.9), (0.0, 0.5)),
              "parietal": ((-0.2, 0.5), (0.5, 0.95)), "occipital": ((0.95, 1.35), (-0.1, 0.3))}[
        kind]
    v_ml = _log_uniform(rng, 0.3, 55.0)  # the lens on a curved table holds more than this
    k = rng.uniform(0.28, 0.5)
    r = (2 * v_ml * 1000 / (np.pi * k)) ** (1 / 3)
    mixed = rng.uniform(0.15, 0.4) if rng.random() < 0.3 else 0.0
    return Lesion(Subtype.EDH, kind, side, _direction(rng, side, az, el),
                  (r * rng.uniform(0.85, 1.15), r * rng.uniform(0.8, 1.1), k * r),
                  _acute_hu(rng, 55, 88), mixed, 1.0, v_ml)


def _plan_sdh(rng: np.random.Generator, side: float, p: AnatomyParams) -> Lesion:
    kind = str(rng.choice(["convexity", "falcine", "tentorial"], p=[0.68, 0.18, 0.14]))
    v_ml = _log_uniform(rng, 0.2, 75.0) if kind == "convexity" else _log_uniform(rng, 0.2, 8.0)
    hu = _acute_hu(rng, 50, 82)
    mixed = 0.0
    if rng.random() < 0.15:
        mixed = -1.0  # acute-on-chronic: a hypodense collection with a dependent dense layer
    elif rng.random() < 0.25:
        mixed = rng.uniform(0.15, 0.35)
    if kind == "convexity":
        f = float(np.clip((v_ml / 25.0) ** (1 / 3), 0.25, 1.0))
        r1, r2 = rng.uniform(45, 75) * f, rng.uniform(35, 55) * f
        gamma = rng.uniform(0.3, 0.7)
        t = float(np.clip(v_ml * 1000 * (gamma + 1) / (np.pi * r1 * r2), 1.2, 26.0))
        return Lesion(Subtype.SDH, kind, side, _direction(rng, side, (-0.6, 0.6), (-0.05, 0.7)),
                      (r1, r2, t), hu, mixed, gamma, v_ml)
    if kind == "falcine":
        anchor = (0.0, rng.uniform(-0.3, 0.45) * p.b, rng.uniform(25, 55) * p.scale)
        return Lesion(Subtype.SDH, kind, side, anchor,
                      (rng.uniform(18, 45), rng.uniform(15, 35), rng.uniform(1.5, 4.5)), hu,
                      max(mixed, 0.0), 0.5, v_ml)
    anchor = (side * rng.uniform(15, 35), rng.uniform(0.35, 0.7) * p.b, 0.0)
    return Lesion(Subtype.SDH, kind, side, anchor,
                  (rng.uniform(20, 35), rng.uniform(15, 30), rng.uniform(1.5, 4.0)), hu,
                  max(mixed, 0.0), 0.5, v_ml)


def _plan_sah(rng: np.random.Generator, side: float, p: AnatomyParams) -> Lesion:
    kind = str(rng.choice(["basal", "perimesencephalic", "sylvian", "interhemispheric",
                           "convexity"], p=[0.28, 0.1, 0.2, 0.1, 0.32]))
    fill = rng.uniform(0.45, 1.0)
    hu = rng.uniform(42, 78)
    if kind in ("basal", "perimesencephalic"):
        r = rng.uniform(14, 26) if kind == "basal" else rng.uniform(7, 12)
        return Lesion(Subtype.SAH, kind, side, (0.0, 0.0, 0.0), (r, r, r), hu, 0.0, fill, 0.0)
    if kind == "interhemispheric":
        anchor = (0.0, rng.uniform(-0.6, 0.2) * p.b, rng.uniform(15, 45) * p.scale)
        r = rng.uniform(12, 30)
        return Lesion(Subtype.SAH, kind, side, anchor, (r, r, r), hu, 0.0, fill, 0.0)
    if kind == "sylvian":
        return Lesion(Subtype.SAH, kind, side, (0.0, 0.0, 0.0), (rng.uniform(14, 30),) * 3, hu,
                      0.0, fill, 0.0)
    r = _log_uniform(rng, 6.0, 32.0)
    return Lesion(Subtype.SAH, kind, side, _direction(rng, side, (-1.2, 1.2), (-0.1, 1.1)),
                  (r, r, r), hu, 0.0, fill, 0.0)


def _plan_iph(rng: np.random.Generator, side: float, p: AnatomyParams) -> Lesion:
    kind = str(rng.choice(["deep", "lobar", "contusion", "cerebellar", "pontine"],
                          p=[0.38, 0.3, 0.14, 0.1, 0.08]))
    if kind == "contusion":
        # Several small hemorrhagic foci under the frontal or temporal pole (coup injury).
        anchor = (_direction(rng, side, (-1.45, -1.0), (-0.35, 0.05)) if rng.random() < 0.5
                  else _direction(rng, side, (-0.55, -0.2), (-0.45, -0.2)))
        n = int(rng.integers(2, 6))
        r0 = rng.uniform(2.0, 6.0)
        return Lesion(Subtype.IPH, kind, side, anchor, (r0, r0 * rng.uniform(0.7, 1.3), r0),
                      rng.uniform(52, 80), 0.0, float(n), float(n * 4 / 3 * np.pi * r0**3 / 1000))
    hi = {"deep": 70.0, "lobar": 70.0, "cerebellar": 30.0, "pontine": 8.0}[kind]
    v_ml = _log_uniform(rng, 0.05, hi)
    r0 = (3 * v_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    ax = np.array([1.0, rng.uniform(0.7, 1.35), rng.uniform(0.7, 1.3)])
    ax /= np.prod(ax) ** (1 / 3)
    if kind == "lobar":
        anchor = _direction(rng, side, (-1.4, 1.4), (-0.2, 1.0))
    elif kind == "deep":
        anchor = (1.0 if rng.random() < 0.6 else 2.0, 0.0, 0.0)  # 1 putamen, 2 thalamus
    else:
        anchor = (0.0, 0.0, 0.0)
    mixed = 0.0
    if rng.random() < 0.25:
        mixed = -1.0 if rng.random() < 0.4 else rng.uniform(0.15, 0.35)  # -1: fluid level
    edema = 0.6 + 0.18 * r0 * rng.uniform(0.5, 1.5)
    return Lesion(Subtype.IPH, kind, side, anchor, tuple((ax * r0).tolist()),  # type: ignore[arg-type]
                  _acute_hu(rng, 58, 90), mixed, edema, v_ml)


def _plan_ivh(rng: np.random.Generator, side: float, p: AnatomyParams) -> Lesion:
    kind = str(rng.choice(["layering", "cast"], p=[0.7, 0.3]))
    both = rng.random() < 0.5
    depth = _log_uniform(rng, 0.8, 14.0)  # down to a sliver in the occipital horn
    return Lesion(Subtype.IVH, kind, 0.0 if both else side, (0.0, 0.0, 0.0), (depth,) * 3,
                  _acute_hu(rng, 50, 85), 0.0, 1.0 if kind == "cast" and both else 0.0, 0.0)


_PLANNERS = {Subtype.EDH: _plan_edh, Subtype.SDH: _plan_sdh, Subtype.SAH: _plan_sah,
             Subtype.IPH: _plan_iph, Subtype.IVH: _plan_ivh}


def with_mass_effect(p: AnatomyParams, lesions: list[Lesion]) -> AnatomyParams:
    """Large space-occupying lesions push the midline structures to the other side."""
    shift, level = 0.0, 20.0
    for les in lesions:
        if les.subtype in (Subtype.EDH, Subtype.SDH, Subtype.IPH) and les.target_ml > 15:
            s = min(12.0, 0.11 * les.target_ml)
            if s > abs(shift):
                shift = -les.side * s
                level = float(np.clip(les.anchor[2] * 60.0 if les.subtype != Subtype.IPH
                                      else 10.0, -10.0, 45.0))
    return replace(p, midline_shift=shift, shift_w=level) if shift else p


# --------------------------------------------------------------------------------------------
# rendering


def _surface_point(d: Vec, p: AnatomyParams) -> np.ndarray:
    e = np.asarray(d, dtype=np.float64)
    c = p.c if e[2] > 0 else p.c_low
    return e / np.sqrt((e[0] / p.a) ** 2 + (e[1] / p.b) ** 2 + (e[2] / c) ** 2)


def _box_around(hc: HeadCoords, centre: np.ndarray | Vec, r: float) -> Box | None:
    c = np.asarray(centre, dtype=np.float64)
    return hc.box((c[0] - r, c[0] + r), (c[1] - r, c[1] + r), (c[2] - r, c[2] + r))


def _extra_axial(an: Anatomy, hc: HeadCoords, les: Lesion,
                 rng: np.random.Generator | None = None) -> tuple[Box, np.ndarray] | None:
    """EDH lens / SDH crescent: 0 < d_in < t(rho), rho the tangential distance from the anchor
    on the inner table in units of the lesion's two radii."""
    p = an.params
    p0 = _surface_point(les.anchor, p)
    r1, r2, t_max = les.size
    b = _box_around(hc, p0, max(r1, r2) * 1.15 + t_max + 4)
    if b is None:
        return None
    u, v, w = hc.sub(b)
    dd = an.d_in[b]
    tis = an.tissue[b]
    c = np.where(w > 0, np.float32(p.c), np.float32(p.c_low))
    un, vn, wn = u / np.float32(p.a), v / np.float32(p.b), w / c
    nrm = np.sqrt(un * un + vn * vn + wn * wn) + np.float32(1e-6)
    en = np.array([p0[0] / p.a, p0[1] / p.b, p0[2] / (p.c if p0[2] > 0 else p.c_low)])
    en /= np.linalg.norm(en)
    t1 = np.cross(en, [0.0, 0.0, 1.0])
    t1 = t1 / np.linalg.norm(t1) if np.linalg.norm(t1) > 1e-3 else np.array([1.0, 0.0, 0.0])
    t2 = np.cross(en, t1)
    rm = float(np.linalg.norm(p0))
    x1 = ((un / nrm - en[0]) * t1[0] + (vn / nrm - en[1]) * t1[1] + (wn / nrm - en[2]) * t1[2])
    x2 = ((un / nrm - en[0]) * t2[0] + (vn / nrm - en[1]) * t2[1] + (wn / nrm - en[2]) * t2[2])
    rho2 = (x1 * np.float32(rm / r1)) ** 2 + (x2 * np.float32(rm / r2)) ** 2
    same_side = (un * en[0] + vn * en[1] + wn * en[2]) / nrm > 0.3
    thick = np.float32(t_max) * np.clip(1 - rho2, 0, 1) ** np.float32(les.shape)
    if t_max > 3 and rng is not None:
        # Real collections are not perfect lenses: a lumpy inner margin.
        thick *= 1 + np.float32(0.15) * smooth_field(rng, hc.grid, 10.0, box=b)
    m = same_side & (rho2 < 1) & (dd > 0) & (dd < thick) & np.isin(tis, _INTRA)
    um = u - midline_u(w, p)
    m &= um * np.float32(les.side) > 0.5  # never across the falx
    return b, m


def _falcine(an: Anatomy, hc: HeadCoords, les: Lesion) -> tuple[Box, np.ndarray] | None:
    p = an.params
    length, height, t = les.size
    c = les.anchor
    b = hc.box((-t - 2, t + 2), (c[1] - length, c[1] + length), (c[2] - height, c[2] + height))
    if b is None:
        return None
    u, v, w = hc.sub(b)
    um = u - midline_u(w, p)
    prof = np.clip(1 - ((v - c[1]) / length) ** 2 - ((w - c[2]) / height) ** 2, 0, 1) ** 0.5
    m = (np.abs(um) < 0.6 + t * prof) & (um * np.float32(les.side) > 0)
    m &= (w > falx_bottom(v, p)) & np.isin(an.tissue[b], _INTRA)
    return b, m


def _tentorial(an: Anatomy, hc: HeadCoords, les: Lesion) -> tuple[Box, np.ndarray] | None:
    p = an.params
    length, width, t = les.size
    c = les.anchor
    b = hc.box((c[0] - width, c[0] + width), (c[1] - length, c[1] + length), (-60.0, -5.0))
    if b is None:
        return None
    u, v, w = hc.sub(b)
    tent = tentorium_w(u, v, p)
    prof = np.clip(1 - ((v - c[1]) / length) ** 2 - ((u - c[0]) / width) ** 2, 0, 1) ** 0.5
    m = (np.abs(w - tent) < 0.5 + t * prof) & (v > petrous_line(u, p))
    m &= np.isin(an.tissue[b], _INTRA)
    return b, m


def _sah(an: Anatomy, hc: HeadCoords, les: Lesion,
         rng: np.random.Generator) -> tuple[Box, np.ndarray] | None:
    lm = an.landmarks
    r = les.size[0]
    if les.kind == "basal":
        centres = [lm["suprasellar"], lm["ambient_l"], lm["ambient_r"], lm["quadrigeminal"]]
        centres += [lm["sylvian_l"], lm["sylvian_r"]] if r > 20 else []
        if "prepontine" in lm:
            centres.append(lm["prepontine"])
        radii = [r] * len(centres)
    elif les.kind == "perimesencephalic":
        centres = [lm["ambient_l"], lm["ambient_r"], lm["midbrain"]]
        centres += [lm["prepontine"]] if "prepontine" in lm else []
        radii = [r] * len(centres)
    elif les.kind == "interhemispheric":
        centres, radii = [les.anchor], [r]
    elif les.kind == "sylvian":
        centres = [lm["sylvian_l" if les.side > 0 else "sylvian_r"]]
        radii = [r]
    else:
        p0 = _surface_point(les.anchor, an.params)
        centres = [tuple((p0 * (1 - 6.0 / np.linalg.norm(p0))).tolist())]
        radii = [r]
    lo = np.min(np.array(centres) - np.array(radii)[:, None], axis=0)
    hi = np.max(np.array(centres) + np.array(radii)[:, None], axis=0)
    b = hc.box((lo[0], hi[0]), (lo[1], hi[1]), (lo[2], hi[2]))
    if b is None:
        return None
    u, v, w = hc.sub(b)
    region = np.zeros(u.shape, dtype=bool)
    for c, rr in zip(centres, radii, strict=True):
        region |= ((u - c[0]) ** 2 + (v - c[1]) ** 2 + (w - c[2]) ** 2) < rr * rr
    m = region & (an.tissue[b] == Tissue.CSF)
    if les.shape < 0.99 and m.any():
        f = smooth_field(rng, hc.grid, 6.0, box=b)
        m &= f > np.quantile(f[m], 1 - les.shape)
    return b, m


def _iph(an: Anatomy, hc: HeadCoords, les: Lesion, rng: np.random.Generator,
         ) -> tuple[Box, np.ndarray, np.ndarray] | None:
    p, lm = an.params, an.landmarks
    sd = "l" if les.side > 0 else "r"
    if les.kind == "contusion":
        return _contusions(an, hc, les, rng)
    if les.kind == "deep":
        c = np.asarray(lm[f"putamen_{sd}" if les.anchor[0] < 1.5 else f"thalamus_{sd}"])
    elif les.kind == "cerebellar":
        c = np.asarray(lm[f"cerebellum_{sd}"])
    elif les.kind == "pontine":
        c = np.asarray(lm["pons"]) + np.array([les.side * 3.0, 0.0, 0.0])
    else:
        p0 = _surface_point(les.anchor, p)
        depth = min(0.45 * np.linalg.norm(p0), max(les.size) + 8.0 + 6.0 * rng.random())
        c = p0 * (1 - depth / np.linalg.norm(p0))
    r = np.asarray(les.size)
    reach = float(r.max()) * 1.35 + les.shape + 2
    b = _box_around(hc, c, reach)
    if b is None:
        return None
    u, v, w = hc.sub(b)
    du, dv, dw = u - np.float32(c[0]), v - np.float32(c[1]), w - np.float32(c[2])
    dist = np.sqrt(du * du + dv * dv + dw * dw) + np.float32(1e-3)
    eu, ev, ew = du / dist, dv / dist, dw / dist
    k = rng.normal(0, 0.16, size=8).astype(np.float32) * np.float32(min(1.0, r.max() / 6.0))
    lobes = (1 + k[0] * eu + k[1] * ev + k[2] * ew + k[3] * eu * ev + k[4] * ev * ew
             + k[5] * eu * ew + k[6] * (eu * eu - ev * ev) + k[7] * (3 * ew * ew - 1))
    if r.max() > 5:
        # Large hematomata have irregular, lobulated margins.
        lobes = lobes + np.float32(0.12) * smooth_field(rng, hc.grid, 0.35 * float(r.max()), box=b)
    rho = np.sqrt((du / r[0]) ** 2 + (dv / r[1]) ** 2 + (dw / r[2]) ** 2) / np.maximum(lobes, 0.5)
    paren = np.isin(an.tissue[b], _PAREN)
    m = (rho < 1) & paren
    edema = (rho >= 1) & (rho < 1 + les.shape / max(float(r.mean()), 0.5)) & paren
    return b, m, edema


def _contusions(an: Anatomy, hc: HeadCoords, les: Lesion, rng: np.random.Generator,
                ) -> tuple[Box, np.ndarray, np.ndarray] | None:
    """Small cortical/subcortical foci clustered under one pole, each with a thin oedema rim."""
    p0 = _surface_point(les.anchor, an.params)
    centre = p0 * (1 - 12.0 / np.linalg.norm(p0))
    b = _box_around(hc, centre, 22.0)
    if b is None:
        return None
    u, v, w = hc.sub(b)
    paren = np.isin(an.tissue[b], _PAREN)
    m = np.zeros(u.shape, dtype=bool)
    rim = np.zeros(u.shape, dtype=bool)
    for _ in range(int(les.shape)):
        c = centre + rng.normal(0, 7.0, size=3)
        r = np.asarray(les.size) * rng.uniform(0.5, 1.3)
        rho2 = ((u - c[0]) / r[0]) ** 2 + ((v - c[1]) / r[1]) ** 2 + ((w - c[2]) / r[2]) ** 2
        m |= rho2 < 1
        rim |= rho2 < 2.2
    return b, m & paren, rim & ~m & paren


def _ivh(an: Anatomy, hc: HeadCoords, les: Lesion) -> tuple[Box, np.ndarray] | None:
    p, lm = an.params, an.landmarks
    sides = ["l", "r"] if les.side == 0 else ["l" if les.side > 0 else "r"]
    b = hc.box((-45.0, 45.0), (-45.0 * p.scale, 55.0 * p.scale), (-25.0, 45.0 * p.scale))
    if b is None:
        return None
    u, v, w = hc.sub(b)
    vent = an.tissue[b] == Tissue.VENTRICLE
    if les.kind == "cast":
        if les.shape < 0.5:  # one lateral ventricle only
            atr = lm[f"atrium_{sides[0]}"]
            vent &= (u - atr[0]) * np.sign(atr[0]) > -abs(atr[0]) + 1.5
        return b, vent
    # Layering: fill the dependent (patient posterior, +y) part of the atria / occipital horns.
    ypat = hc.grid.y[b[1]][None, :, None].astype(np.float32)
    m = np.zeros(u.shape, dtype=bool)
    for sd in sides:
        atr = lm[f"atrium_{sd}"]
        near = vent & ((u - atr[0]) ** 2 + (v - atr[1] - 8.0) ** 2 + (w - atr[2]) ** 2 < 26.0**2)
        if not near.any():
            continue
        ymax = float(np.broadcast_to(ypat, u.shape)[near].max())
        m |= near & (ypat > ymax - les.size[0])
    return b, m


def _density(les: Lesion, m: np.ndarray, b: Box, hc: HeadCoords,
             rng: np.random.Generator) -> np.ndarray:
    """Blood HU inside a lesion: acute blood, a dependent hematocrit level, or a swirl of
    hypodense unclotted blood."""
    vals = np.full(m.shape, les.hu, dtype=np.float32)
    if les.mixed < 0 and m.any():
        ypat = np.broadcast_to(hc.grid.y[b[1]][None, :, None].astype(np.float32), m.shape)
        level = np.quantile(ypat[m], 0.55 if les.subtype == Subtype.SDH else 0.6)
        light = np.float32(rng.uniform(20, 36) if les.subtype == Subtype.SDH else les.hu - 22)
        vals = np.where(ypat > level, np.float32(les.hu), light)
    elif les.mixed > 0 and m.any():
        f = smooth_field(rng, hc.grid, 3.0, box=b)
        thr = np.quantile(f[m], 1 - les.mixed)
        vals = np.where(f > thr, np.float32(les.hu - rng.uniform(20, 35)), vals)
    return vals


def _render_one(an: Anatomy, hc: HeadCoords, les: Lesion, rng: np.random.Generator,
                labels: np.ndarray) -> int:
    edema = None
    if les.subtype in (Subtype.EDH, Subtype.SDH) and les.kind not in ("falcine", "tentorial"):
        got = _extra_axial(an, hc, les, rng)
    elif les.kind == "falcine":
        got = _falcine(an, hc, les)
    elif les.kind == "tentorial":
        got = _tentorial(an, hc, les)
    elif les.subtype == Subtype.SAH:
        got = _sah(an, hc, les, rng)
    elif les.subtype == Subtype.IPH:
        res = _iph(an, hc, les, rng)
        got = None if res is None else (res[0], res[1])
        edema = None if res is None else res[2]
    else:
        got = _ivh(an, hc, les)
    if got is None:
        return 0
    b, m = got
    n = int(m.sum())
    if n == 0:
        return 0
    if edema is not None:
        sub = an.hu[b]
        sub[edema] = np.maximum(sub[edema] - np.float32(rng.uniform(8, 15)), 12.0)
    vals = _density(les, m, b, hc, rng)
    an.hu[b][m] = vals[m]
    an.tissue[b][m] = Tissue.BLOOD
    labels[b][m] = int(les.subtype)
    return n


def _grow(les: Lesion) -> Lesion:
    s = tuple(x * 1.5 for x in les.size)
    return replace(les, size=s)  # type: ignore[arg-type]


def render_lesions(an: Anatomy, hc: HeadCoords, lesions: list[Lesion],
                   rng: np.random.Generator) -> np.ndarray:
    """Draw the lesions into ``an.hu`` (in place) and return the label volume (uint8 codes).

    A lesion that misses every voxel (tiny, between slices) is grown until it shows: a positive
    study always has blood in its mask.
    """
    labels = np.zeros(an.hu.shape, dtype=np.uint8)
    order = {Subtype.IPH: 0, Subtype.IVH: 1, Subtype.SAH: 2, Subtype.SDH: 3, Subtype.EDH: 4}
    for les in sorted(lesions, key=lambda x: order[x.subtype]):
        for _ in range(6):
            if _render_one(an, hc, les, rng, labels):
                break
            les = _grow(les)
    return labels
