"""Deep brain anatomy: ventricles, basal ganglia, thalami, fissures, cisterns, the posterior fossa,
and the dura (falx, tentorium, venous sinuses).

Positions are in head coordinates (mm) scaled by the head size; every structure is evaluated only on
its own sub-volume of the grid.
"""

from __future__ import annotations

import itertools

import numpy as np

from bloodnet_ops.synth.geometry import HeadCoords
from bloodnet_ops.synth.headparams import (
    AnatomyParams,
    falx_bottom,
    midline_u,
    petrous_line,
    tentorium_w,
)
from bloodnet_ops.synth.shapes import ellipsoid_box, ellipsoid_rho2
from bloodnet_ops.synth.tissue import INTRACRANIAL, Tissue

Vec = tuple[float, float, float]
_INTRA_CODES = np.array([int(t) for t in INTRACRANIAL], dtype=np.uint8)


def _intracranial(tissue_sub: np.ndarray) -> np.ndarray:
    return np.isin(tissue_sub, _INTRA_CODES)


def paint_ellipsoid(
    hc: HeadCoords,
    hu: np.ndarray,
    tissue: np.ndarray,
    centre: Vec,
    radii: Vec,
    value: float,
    code: Tissue,
    *,
    yaw: float = 0.0,
    pitch: float = 0.0,
    shift: float = 0.0,
    only_intracranial: bool = True,
    shell: tuple[float, float] | None = None,
) -> None:
    """Fill an ellipsoid (or the shell ``rho`` in ``shell``) with one HU value and tissue code.

    ``shift`` moves the structure along u (midline shift from a mass effect).
    """
    c = (centre[0] + shift, centre[1], centre[2])
    b = ellipsoid_box(hc, c, radii)
    if b is None:
        return
    u, v, w = hc.sub(b)
    rho2 = ellipsoid_rho2(u, v, w, c, radii, yaw, pitch)
    inside = rho2 < 1.0 if shell is None else (rho2 >= shell[0] ** 2) & (rho2 < shell[1] ** 2)
    if only_intracranial:
        inside &= _intracranial(tissue[b])
    hu[b][inside] = value
    tissue[b][inside] = code


def _shift_at(p: AnatomyParams, w: float) -> float:
    return float(midline_u(np.float32(w), p))


def sylvian_depth(hc: HeadCoords, p: AnatomyParams, depth: np.ndarray) -> None:
    """Lower the cortical depth near the Sylvian fissures and insular cisterns (in place), so that
    the fissure is CSF lined by cortex."""
    s = p.scale
    hw = 0.5 + 1.4 * p.atrophy
    u_ins = 31.0 * s
    b = hc.box((-p.a, p.a), (-40 * s, 30 * s), (-30 * s, 18 * s))
    if b is None:
        return
    u, v, w = hc.sub(b)
    au = np.abs(u)
    plane = -8.0 * s - 0.8 * (au - u_ins) + 0.3 * w
    lateral = (au > u_ins - 1) & (w > -24 * s) & (w < 12 * s - 0.2 * (au - u_ins))
    # The horizontal segment (vallecula) joins the fissure to the suprasellar cistern.
    medial = (au > 12 * s) & (au < u_ins) & (w > -23 * s) & (w < -12 * s)
    d_fis = np.where(lateral, np.abs(v - plane), np.where(medial, np.abs(v + 10 * s), 99.0)) - hw
    ins_w = (w > -16 * s) & (w < 14 * s) & (v > -26 * s) & (v < 14 * s)
    bow = 0.006 * (v + 6 * s) ** 2
    d_ins = np.where(ins_w, np.abs(au - u_ins + bow) - 0.25 - 0.4 * p.atrophy, 99.0)
    sub = depth[b]
    np.minimum(sub, np.minimum(d_fis, d_ins).astype(np.float32), out=sub)


def tentorium_depth(hc: HeadCoords, p: AnatomyParams, depth: np.ndarray) -> None:
    """The tentorium is a dural surface: occipital lobes above, cerebellum below (in place)."""
    b = hc.box((-p.a, p.a), (-20.0, p.b + 5), (p.post_floor - 10, -8.0))
    if b is None:
        return
    u, v, w = hc.sub(b)
    tent = tentorium_w(u, v, p)
    # A thin CSF layer either side of the tentorium (a real gap only in atrophic brains).
    d_t = np.where(v > petrous_line(u, p), np.abs(w - tent) + 0.3 - 0.8 * p.atrophy, 99.0)
    d_t = d_t.astype(np.float32)
    sub = depth[b]
    np.minimum(sub, d_t, out=sub)


def deep_structures(
    hc: HeadCoords, p: AnatomyParams, hu: np.ndarray, tissue: np.ndarray,
    landmarks: dict[str, Vec],
) -> None:
    """Basal ganglia, thalami, lateral and third ventricles (midline shift applied)."""
    s = p.scale
    sh = _shift_at(p, 10.0 * s)
    for sd, name in ((1.0, "l"), (-1.0, "r")):
        vs = p.vent_scale * (p.vent_asym if sd < 0 else 1.0)
        # Deep grey first; the ventricles are carved out of it afterwards.
        caud = (sd * (1.5 + 8.5 * p.vent_scale + 3.5), -17 * s, 11 * s)
        paint_ellipsoid(hc, hu, tissue, caud, (4.5, 9 * s, 8 * s), p.deep_gm_hu, Tissue.DEEP_GM,
                        shift=sh)
        put = (sd * 21.0 * s, -4.0 * s, 2.0 * s)
        paint_ellipsoid(hc, hu, tissue, put, (5.5 * s, 13 * s, 9 * s), p.deep_gm_hu,
                        Tissue.DEEP_GM, yaw=-sd * 12, shift=sh)
        gp = (sd * 16.5 * s, -3.0 * s, 1.0 * s)
        paint_ellipsoid(hc, hu, tissue, gp, (2.8 * s, 8 * s, 6 * s), p.deep_gm_hu - 3.5,
                        Tissue.DEEP_GM, yaw=-sd * 12, shift=sh)
        thal = (sd * 9.0 * s, 10.0 * s, 3.0 * s)
        paint_ellipsoid(hc, hu, tissue, thal, (7.5 * s, 11 * s, 8 * s), p.deep_gm_hu - 1.5,
                        Tissue.DEEP_GM, shift=sh)
        landmarks[f"putamen_{name}"] = (put[0] + sh, put[1], put[2])
        landmarks[f"gp_{name}"] = (gp[0] + sh, gp[1], gp[2])
        landmarks[f"thalamus_{name}"] = (thal[0] + sh, thal[1], thal[2])
        # Lateral ventricle: frontal horn, body, atrium, occipital and temporal horns.
        off = 1.0 + 0.5 * vs
        parts = (
            ((sd * (off + 4.0 * vs), -20 * s, 14 * s), (4.5 * vs, 12 * s, 7.5 * s), -sd * 14),
            ((sd * (off + 4.2 * vs), 0.0, 21 * s), (4.5 * vs, 20 * s, 7.0 * s), sd * 4),
            ((sd * (12 * s + 3.0 * vs), 21 * s, 12 * s), (6.0 * vs, 9 * s, 9.0 * s), sd * 25),
            ((sd * (16 * s + 1.5 * vs), 33 * s, 8 * s), (3.0 * vs, 11 * s, 4.0 * s), sd * 22),
            ((sd * 27 * s, -3 * s, -14 * s), (2.2 * vs, 13 * s, 3.0 * s), -sd * 22),
        )
        for centre, radii, yaw in parts:
            paint_ellipsoid(hc, hu, tissue, centre, radii, p.csf_hu, Tissue.VENTRICLE, yaw=yaw,
                            shift=sh)
        atrium = parts[2][0]
        landmarks[f"atrium_{name}"] = (atrium[0] + sh, atrium[1], atrium[2])
        occ = parts[3][0]
        landmarks[f"occipital_horn_{name}"] = (occ[0] + sh, occ[1], occ[2])
        landmarks[f"frontal_horn_{name}"] = (parts[0][0][0] + sh, parts[0][0][1], parts[0][0][2])
    vs = p.vent_scale
    paint_ellipsoid(hc, hu, tissue, (0.0, -2 * s, -3 * s), (0.8 + 1.3 * vs, 12 * s, 8 * s),
                    p.csf_hu, Tissue.VENTRICLE, shift=sh)
    landmarks["third_ventricle"] = (sh, -2 * s, -3 * s)
    landmarks["pineal"] = (sh, 13.0 * s, 0.0)


def posterior_fossa(
    hc: HeadCoords, p: AnatomyParams, depth: np.ndarray, hu: np.ndarray, tissue: np.ndarray,
    landmarks: dict[str, Vec],
) -> None:
    """Cerebellum (with folia and a white-matter core), pons, medulla and the fourth ventricle."""
    s = p.scale
    b = hc.box((-p.a, p.a), (-15.0, p.b + 5), (p.post_floor - 12, -10.0))
    if b is None:
        return
    u, v, w = hc.sub(b)
    tis = tissue[b]
    pf = (v > petrous_line(u, p)) & (w < tentorium_w(u, v, p))
    sas = 0.6 + 1.6 * p.atrophy
    paren = pf & np.isin(tis, np.array([Tissue.GM, Tissue.WM, Tissue.CSF], dtype=np.uint8))
    paren &= depth[b] > sas
    # Folia: thin, roughly horizontal fissures.
    phase = w + 0.12 * v + 1.6 * np.sin(u / 7.0) + 1.2 * np.sin(v / 9.0)
    fissure = np.abs(np.cos(phase * np.float32(2 * np.pi / 7.0))) > 0.985 - 0.03 * p.atrophy
    # Cerebellar cortex and white matter are finely interleaved: a grey/white average.
    base = 0.6 * p.gm_hu + 0.4 * p.wm_hu
    val = np.where(fissure, 0.8 * base + 0.2 * p.csf_hu, base).astype(np.float32)
    hu[b][paren] = val[paren]
    tis[paren] = Tissue.CEREBELLUM
    pv = float(petrous_line(0.0, p)) + 9.0 * s
    for sd in (1.0, -1.0):
        core = (sd * 19 * s, pv + 27 * s, -44 * s)
        paint_ellipsoid(hc, hu, tissue, core, (8 * s, 12 * s, 6 * s), p.wm_hu + 1.0,
                        Tissue.CEREBELLUM)
        landmarks["cerebellum_l" if sd > 0 else "cerebellum_r"] = (sd * 24 * s, pv + 30 * s,
                                                                   -42 * s)
    # Prepontine / cerebellopontine cisterns, then the pons and the medulla inside them.
    pons, pons_r = (0.0, pv, -37.0 * s), (13 * s, 10 * s, 13 * s)
    paint_ellipsoid(hc, hu, tissue, pons, (pons_r[0] + 3, pons_r[1] + 2.5, pons_r[2] + 2),
                    p.csf_hu, Tissue.CSF)
    paint_ellipsoid(hc, hu, tissue, pons, pons_r, p.wm_hu + 3.0, Tissue.BRAINSTEM)
    med = (0.0, pv + 4 * s, -62.0 * s)
    paint_ellipsoid(hc, hu, tissue, med, (10 * s, 10 * s, 14 * s), p.csf_hu, Tissue.CSF)
    paint_ellipsoid(hc, hu, tissue, med, (7.5 * s, 7.5 * s, 14 * s), p.wm_hu + 3.0,
                    Tissue.BRAINSTEM)
    fourth = (0.0, pv + 12 * s, -37.0 * s)
    paint_ellipsoid(hc, hu, tissue, fourth, (4.5 * s, 3.5 * s, 7 * s), p.csf_hu,
                    Tissue.VENTRICLE)
    landmarks["pons"] = pons
    landmarks["fourth_ventricle"] = fourth
    landmarks["prepontine"] = (0.0, pv - pons_r[1] - 1.5, pons[2])


def cisterns(
    hc: HeadCoords, p: AnatomyParams, hu: np.ndarray, tissue: np.ndarray,
    landmarks: dict[str, Vec],
) -> None:
    """Suprasellar, ambient and quadrigeminal cisterns around the midbrain."""
    s = p.scale
    pv = float(petrous_line(0.0, p)) + 9.0 * s
    mid, mid_r = (0.0, pv + 5 * s, -14.0 * s), (11.5 * s, 9.0 * s, 8.0 * s)
    grow = 1.5 + 2.0 * p.atrophy
    paint_ellipsoid(hc, hu, tissue, mid, (mid_r[0] + grow, mid_r[1] + grow, mid_r[2]),
                    p.csf_hu, Tissue.CSF)
    quad = (0.0, pv + 17 * s, -8.0 * s)
    paint_ellipsoid(hc, hu, tissue, quad, (6 * s + grow, 4 * s + grow, 5 * s), p.csf_hu,
                    Tissue.CSF)
    supra = (0.0, -13 * s, -19.0 * s)
    paint_ellipsoid(hc, hu, tissue, supra, (11 * s + grow, 7 * s + grow, 4.5 * s), p.csf_hu,
                    Tissue.CSF)
    paint_ellipsoid(hc, hu, tissue, (0.0, -15 * s, -18.0 * s), (7 * s, 2.2, 1.8), p.wm_hu + 4.0,
                    Tissue.WM)
    # Midbrain with the interpeduncular notch in front.
    paint_ellipsoid(hc, hu, tissue, mid, mid_r, p.wm_hu + 3.0, Tissue.BRAINSTEM)
    paint_ellipsoid(hc, hu, tissue, (0.0, mid[1] - mid_r[1] + 1.0, mid[2]), (2.5, 3.0, 6.0),
                    p.csf_hu, Tissue.CSF)
    landmarks["midbrain"] = mid
    landmarks["suprasellar"] = supra
    landmarks["ambient_l"] = (mid_r[0] + 1.0, mid[1], mid[2])
    landmarks["ambient_r"] = (-mid_r[0] - 1.0, mid[1], mid[2])
    landmarks["quadrigeminal"] = quad
    u_ins = 31.0 * s
    landmarks["sylvian_l"] = (u_ins + 8.0, -8.0 * s - 0.8 * 8.0, -4.0 * s)
    landmarks["sylvian_r"] = (-u_ins - 8.0, -8.0 * s - 0.8 * 8.0, -4.0 * s)


def _segment_distance(u: np.ndarray, v: np.ndarray, w: np.ndarray, a: Vec, b: Vec) -> np.ndarray:
    ab = np.subtract(b, a)
    t = ((u - a[0]) * ab[0] + (v - a[1]) * ab[1] + (w - a[2]) * ab[2]) / float(ab @ ab)
    t = np.clip(t, 0.0, 1.0)
    du, dv, dw = u - (a[0] + t * ab[0]), v - (a[1] + t * ab[1]), w - (a[2] + t * ab[2])
    return np.sqrt(du * du + dv * dv + dw * dw)


def dural_structures(
    hc: HeadCoords, p: AnatomyParams, d_in: np.ndarray, hu: np.ndarray, tissue: np.ndarray,
    landmarks: dict[str, Vec],
) -> None:
    """Falx, tentorium and the dural venous sinuses, in place.

    HU ranges (drawn per study in :func:`~bloodnet_ops.synth.headparams.sample_anatomy`):
    falx cerebri ``falx_hu`` 35-80 over a full thickness of 0.6-3.2 mm, from the inner table down
    to its free edge above the corpus callosum (highest at the vertex, where it meets the
    superior sagittal sinus); tentorium ``tent_hu`` 35-75, 0.6-2.4 mm; superior sagittal,
    straight, transverse and sigmoid sinuses and the torcula at ``venous_hu`` 40-70 (65-78 as a
    "dense sinus" mimic). Thick slices average these thin sheets with the brain next to them, as
    a scanner does, so the slab value may be lower.
    """
    s = p.scale
    ss = p.sinus_scale
    intra_codes = np.array([Tissue.CSF, Tissue.GM, Tissue.WM], dtype=np.uint8)
    sinus_codes = np.array([Tissue.CSF, Tissue.GM, Tissue.WM, Tissue.CEREBELLUM, Tissue.SOFT],
                           dtype=np.uint8)
    b = hc.box((-12.0, 12.0), (-p.b - 5, p.b + 5), (-40.0, p.c + 5))
    if b is not None:
        u, v, w = hc.sub(b)
        um = u - midline_u(w, p)
        dd = d_in[b]
        tis = tissue[b]
        intra = np.isin(tis, intra_codes)
        # The falx thickens towards the vertex, where it splits around the sagittal sinus.
        half_t = np.float32(p.falx_half_t) * (1.0 + 0.6 * np.exp(-dd / 12.0))
        falx = intra & (np.abs(um) < half_t) & (w > falx_bottom(v, p))
        sub = hu[b]
        sub[falx] = np.float32(p.falx_hu)
        tis[falx] = Tissue.DURA
        # Superior sagittal sinus: a triangle against the inner table along the midline.
        h = 7.0 * s * ss
        sss = (dd > 0) & (dd < h) & (np.abs(um) < 0.9 * (h - dd) + 0.5) & (w > -30.0)
        sss &= np.isin(tis, np.array([*sinus_codes, Tissue.DURA], dtype=np.uint8))
        sub[sss] = p.venous_hu
        tis[sss] = Tissue.SINUS
    b = hc.box((-p.a, p.a), (0.0, p.b + 5), (p.post_floor - 5, -5.0))
    if b is not None:
        u, v, w = hc.sub(b)
        tis = tissue[b]
        sub = hu[b]
        tent = tentorium_w(u, v, p)
        post = v > petrous_line(u, p)
        tline = post & (np.abs(w - tent) < p.tent_half_t) & np.isin(
            tis, np.array([*intra_codes, Tissue.CEREBELLUM], dtype=np.uint8))
        sub[tline] = np.float32(p.tent_hu)
        tis[tline] = Tissue.DURA
        dd = d_in[b]
        trans = post & (dd > 0) & (dd < 5.5 * s * ss) & (np.abs(w - tent + 2.0) < 3.5 * ss)
        trans &= (v > 0.3 * p.b) & (tis != Tissue.BONE) & (tis != Tissue.AIR)
        sub[trans] = p.venous_hu
        tis[trans] = Tissue.SINUS
    torcula = (0.0, p.b - 4.0, float(tentorium_w(np.float32(0), np.float32(p.b), p)))
    galen = (0.0, 17.0 * s, 2.0 * s)
    b = hc.box((-4.0 * ss, 4.0 * ss), (galen[1] - 4, torcula[1] + 4),
               (torcula[2] - 4, galen[2] + 4))
    if b is not None:
        u, v, w = hc.sub(b)
        tube = _segment_distance(u, v, w, galen, torcula) < 2.3 * ss
        tube &= np.isin(tissue[b], np.array([*intra_codes, Tissue.CEREBELLUM, Tissue.DURA],
                                            dtype=np.uint8))
        hu[b][tube] = p.venous_hu
        tissue[b][tube] = Tissue.SINUS
    _sigmoid_sinuses(hc, p, d_in, hu, tissue, landmarks)
    landmarks["torcula"] = torcula
    landmarks["vein_of_galen"] = galen


def _sigmoid_sinuses(hc: HeadCoords, p: AnatomyParams, d_in: np.ndarray, hu: np.ndarray,
                     tissue: np.ndarray, landmarks: dict[str, Vec]) -> None:
    """The sigmoid sinuses: from the lateral end of each transverse sinus an S-shaped tube
    (venous_hu, 40-70 HU) curving down and forwards in its groove behind the petrous bone to the
    jugular foramen."""
    s, ss = p.scale, p.sinus_scale
    w_t = float(tentorium_w(np.float32(p.a * 0.8), np.float32(0.6 * p.b), p)) - 2.0
    codes = np.array([Tissue.CSF, Tissue.GM, Tissue.WM, Tissue.CEREBELLUM, Tissue.SOFT,
                      Tissue.SINUS, Tissue.BONE], dtype=np.uint8)  # bone: its groove
    for sd, name in ((1.0, "l"), (-1.0, "r")):
        u0 = sd * (p.a - 9.0)
        pts = [(u0, 0.55 * p.b, w_t),
               (sd * (p.a - 11.0), 0.3 * p.b, w_t - 10.0 * s),
               (sd * (p.a - 16.0), float(petrous_line(p.a - 16.0, p)) + 8.0, w_t - 20.0 * s),
               (sd * 27.0 * s, float(petrous_line(27.0 * s, p)) + 4.0, p.post_floor + 2.0)]
        pts = [_inside_table(pt, p, 0.94) for pt in pts]
        r = 3.0 * ss
        lo = np.min(pts, axis=0) - r - 1
        hi = np.max(pts, axis=0) + r + 1
        b = hc.box((lo[0], hi[0]), (lo[1], hi[1]), (lo[2], hi[2]))
        if b is None:
            continue
        u, v, w = hc.sub(b)
        dist = np.full(u.shape, np.inf, dtype=np.float32)
        for a, c in itertools.pairwise(pts):
            np.minimum(dist, _segment_distance(u, v, w, a, c).astype(np.float32), out=dist)
        tube = (dist < r) & np.isin(tissue[b], codes) & (d_in[b] > -1.0)
        hu[b][tube] = p.venous_hu
        tissue[b][tube] = Tissue.SINUS
        landmarks[f"sigmoid_{name}"] = pts[2]


def _inside_table(pt: Vec, p: AnatomyParams, q: float) -> Vec:
    """``pt`` moved along the ray from the head centre to the normalised radius ``q`` of the
    inner-table ellipsoid (q < 1: just inside)."""
    u, v, w = pt
    c = p.c if w > 0 else p.c_low
    a = p.a * (1 + p.egg * float(np.clip(v / p.b, -1, 1)))
    r = float(np.sqrt((u / a) ** 2 + (v / p.b) ** 2 + (w / c) ** 2))
    k = q / max(r, 1e-6)
    return (u * k, v * k, w * k)
