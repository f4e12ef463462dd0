"""The head phantom in Hounsfield units: scalp, skull with diploë, cortex with sulci, white matter.

Everything is vectorised numpy on the study's voxel grid. The cranial vault is an egg-shaped
ellipsoid with smooth bumps; one distance field ``d_in`` (mm from the inner table, > 0 inside) gives
all shells (scalp, skull, subarachnoid space, cortex). Deep structures live in :mod:`.brain`, the
skull base in :mod:`.skullbase`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bloodnet_ops.synth import brain, skullbase
from bloodnet_ops.synth.geometry import HeadCoords, smooth_field
from bloodnet_ops.synth.headparams import AnatomyParams, falx_bottom, midline_u
from bloodnet_ops.synth.tissue import Tissue


@dataclass
class Anatomy:
    """The rendered phantom: HU, tissue classes and the fields that lesions are placed with."""

    hu: np.ndarray  #: float32 (z, y, x)
    tissue: np.ndarray  #: uint8 Tissue codes (z, y, x)
    d_in: np.ndarray  #: float32 mm from the inner table, > 0 inside the cranial vault
    params: AnatomyParams
    landmarks: dict[str, tuple[float, float, float]] = field(default_factory=dict)


def inner_table_distance(hc: HeadCoords, p: AnatomyParams) -> np.ndarray:
    """Approximate signed distance (mm) to the inner table, > 0 inside: (1 - r) / |∇r| of the
    egg-shaped ellipsoid, exact near the surface where it matters."""
    u, v, w = hc.u, hc.v, hc.w
    a = np.float32(p.a) * (1 + np.float32(p.egg) * np.clip(v / np.float32(p.b), -1, 1))
    c = np.where(w > 0, np.float32(p.c), np.float32(p.c_low))
    ua, vb, wc = u / a, v / np.float32(p.b), w / c
    r = np.sqrt(ua * ua + vb * vb + wc * wc) + np.float32(1e-4)
    ga, gb, gc = ua / a, vb / np.float32(p.b), wc / c
    g = np.sqrt(ga * ga + gb * gb + gc * gc) / r + np.float32(1e-5)
    return (1 - r) / g


def _shells(hc: HeadCoords, p: AnatomyParams, d_in: np.ndarray, hu: np.ndarray,
            tissue: np.ndarray, rng: np.random.Generator) -> None:
    """Skull (tables + diploë) and scalp (skin, fat, galea/temporalis) outside the inner table."""
    # Candidate voxels: a band outside the inner table, wider only where it must be (temporalis
    # laterally, the frontal sinus in front); the band is most of the cost of this function.
    base = p.skull_t * 1.5 + p.scalp_t + 2.0
    extra = max(p.temporalis, p.skull_t * 1.25 * p.frontal_sinus)
    near = (d_in < 0) & (d_in > -(base + extra))
    near &= (d_in > -base) | (np.abs(hc.u) > 0.5 * p.a) | (hc.v < -0.5 * p.b)
    shell = np.flatnonzero(near)
    u, v, w = hc.u.ravel()[shell], hc.v.ravel()[shell], hc.w.ravel()[shell]
    s_out = -d_in.ravel()[shell]
    rel_u = np.clip(np.abs(u) / p.a, 0, 1)
    lat = rel_u * rel_u
    lat *= lat
    # Temporal squama is thin, the occiput and the frontal bone over a sinus are thick.
    t_sk = p.skull_t * (1 - 0.45 * lat * np.exp(-((w + 5) / 30.0) ** 2))
    t_sk *= 1 + 0.45 * np.exp(-((v - p.b) / 30.0) ** 2 - ((w + 30) / 22.0) ** 2)
    front = np.exp(-((u / (18 + 10 * p.frontal_sinus)) ** 2) - ((w - 5) / 16.0) ** 2) * (v < 0)
    t_sk *= 1 + 1.2 * p.frontal_sinus * front
    frac = s_out / t_sk
    bone = frac < 1
    ct = np.clip(1.6 / t_sk, 0.18, 0.4)
    cortical = (frac < ct) | (frac > 1 - ct)
    vals = np.where(cortical, p.cortical_hu, p.diploe_hu).astype(np.float32)
    vals += rng.normal(0, 90, size=vals.size).astype(np.float32) * ~cortical
    # Sutures: a thin lucent line where the coronal / sagittal / lambdoid planes cross the vault.
    sut = (np.abs(v + 0.1 * p.b + 0.25 * w) < 0.6) | ((np.abs(u) < 0.6) & (w > 20))
    sut |= (np.abs(v - 0.75 * p.b + 0.35 * w) < 0.6) & (w > -25)
    vals = np.where(sut & (rng.random(vals.size) < 0.8), 150.0, vals)
    # Frontal sinus: an air cavity inside the thickened frontal bone.
    fs = (front > 0.35) & (frac > 0.3) & (frac < 0.75) & (p.frontal_sinus > 0.15)
    vals = np.where(fs, -900.0, vals)
    # Scalp: galea / temporalis muscle next to the bone, then fat, then skin.
    temporal = p.temporalis * np.clip((rel_u - 0.6) / 0.3, 0, 1) * np.exp(-((w + 5) / 28.0) ** 2)
    temporal *= (v < 0.35 * p.b).astype(np.float32)
    t_sc = p.scalp_t + temporal
    x = s_out - t_sk  # depth into the scalp from the bone surface
    in_scalp = (x >= 0) & (x < t_sc)
    muscle_t = 0.3 * p.scalp_t + temporal
    fat_t = p.fat_frac * p.scalp_t
    skin = x > t_sc - 1.4
    fat = (~skin) & (x > muscle_t) & (x < muscle_t + fat_t)
    scalp_vals = np.where(fat, -95.0, np.where(skin, 45.0, 42.0)).astype(np.float32)
    out_vals = np.where(bone, vals, np.where(in_scalp, scalp_vals, -1000.0))
    out_tis = np.where(
        bone, np.where(fs, Tissue.AIR_CELLS, Tissue.BONE),
        np.where(in_scalp, np.where(fat, Tissue.FAT, Tissue.SOFT), Tissue.AIR),
    ).astype(np.uint8)
    hu.ravel()[shell] = out_vals
    tissue.ravel()[shell] = out_tis


_PHI_BINS, _THETA_BINS = 180, 450  #: angular resolution of the sulcal pattern table
_SPHERE_R = 70.0  #: radius (mm) at which the sulcal wavelength is defined


def _sphere_table(rng: np.random.Generator, wavelength: float, k: int) -> np.ndarray:
    """A smooth isotropic random field on the sphere of directions, tabulated over (elevation,
    azimuth): random Fourier features of a 3D field sampled on a sphere of radius 70 mm, so there
    is no seam and no pole artefact. Unit variance, float32 (180, 450)."""
    dirs = rng.standard_normal((k, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    kvec = dirs * (2 * np.pi / wavelength) * rng.uniform(0.8, 1.2, size=(k, 1))
    phase = rng.uniform(0, 2 * np.pi, size=k)
    phi = np.linspace(-np.pi / 2, np.pi / 2, _PHI_BINS, dtype=np.float32)
    th = np.linspace(-np.pi, np.pi, _THETA_BINS, endpoint=False, dtype=np.float32)
    cp = np.cos(phi)[:, None]
    pts = np.stack([cp * np.cos(th), cp * np.sin(th), np.broadcast_to(np.sin(phi)[:, None],
                                                                      (phi.size, th.size))], -1)
    arg = (pts * np.float32(_SPHERE_R)).reshape(-1, 3) @ kvec.T.astype(np.float32)
    arg += phase.astype(np.float32)
    table = np.cos(arg).sum(axis=1) * np.float32(np.sqrt(2.0 / k))
    return table.reshape(_PHI_BINS, _THETA_BINS).astype(np.float32)


def _cortex(hc: HeadCoords, p: AnatomyParams, d_in: np.ndarray, floor_depth: np.ndarray,
            hu: np.ndarray, tissue: np.ndarray, rng: np.random.Generator,
            texture: np.ndarray) -> np.ndarray:
    """CSF over the brain, a grey-matter ribbon folded into sulci, white matter inside.

    Sulci are radial sheets: they sit where a random field over the sphere of directions (seen
    from the centre of the head) crosses zero, and reach in from every CSF surface to a depth that
    varies per sulcus. A tangential slice (vertex, floor) therefore shows a gyral network, a
    perpendicular one short sulci. Returns the cortical depth (mm to the nearest CSF surface).
    """
    u, v, w = hc.u, hc.v, hc.w
    intra = (d_in > 0) & (floor_depth > 0)
    um = u - midline_u(w, p)
    half_fissure = 0.5 + 1.2 * p.atrophy
    d_mid = np.where(w > falx_bottom(v, p), np.abs(um) - half_fissure, np.float32(99.0))
    depth = np.minimum(np.minimum(d_in, d_mid), floor_depth)
    brain.sylvian_depth(hc, p, depth)
    brain.tentorium_depth(hc, p, depth)
    sas = 0.6 + 2.0 * p.atrophy
    hu[intra] = p.csf_hu
    tissue[intra] = Tissue.CSF
    deep = intra & (depth > sas)
    # Sulci only matter in the outer band; work on those voxels alone.
    band = np.flatnonzero(deep & (depth < p.sulcal_depth * 1.3 + p.cortex_t))
    uu, vv, ww = u.ravel()[band], v.ravel()[band], w.ravel()[band]
    dd = depth.ravel()[band]
    wavelength = 15.0 + 6.0 * p.atrophy
    n_tab = _sphere_table(rng, wavelength, 28)
    d_tab = _sphere_table(rng, 90.0, 6)
    un, vn, wn = uu / np.float32(p.a), vv / np.float32(p.b), ww / np.float32(p.c)
    rn = np.sqrt(un * un + vn * vn + wn * wn) + np.float32(1e-3)
    phi = np.arcsin(np.clip(wn / rn, -1, 1))
    th = np.arctan2(vn, un)
    # Sulci are tortuous: bend the radial sheets with depth.
    th += np.float32(0.035) * np.sin(dd * np.float32(0.45) + 11.0 * phi)
    phi = phi + np.float32(0.03) * np.sin(dd * np.float32(0.5) + 9.0 * th)
    pi = np.float32(np.pi)
    ib = ((phi + pi / 2) * np.float32((_PHI_BINS - 1) / np.pi) + 0.5).astype(np.int32)
    jb = ((th + pi) * np.float32(_THETA_BINS / (2 * np.pi))).astype(np.int32) % _THETA_BINS
    n = np.abs(n_tab[ib, jb])
    r_mm = np.sqrt(uu * uu + vv * vv + ww * ww) + np.float32(5.0)
    grad = np.float32(2 * np.pi / wavelength * 0.8 * _SPHERE_R) / r_mm  # |dn/ds| per mm
    d_sulc = n / grad  # mm to the sulcus centre
    reach = p.sulcal_depth * (0.8 + 0.3 * d_tab[ib, jb])
    hw = 0.6 + 1.0 * p.atrophy
    # Sulci start from the convexity and the medial surface only; the floors and the tentorium
    # get a plain cortical ribbon (their own sulci would be cut tangentially anyway).
    dc = np.minimum(d_in.ravel()[band], 1.7 * d_mid.ravel()[band])
    sulcus = (dc < reach) & (d_sulc < hw)
    gm = (dd < sas + p.cortex_t) | ((d_sulc < hw + p.cortex_t) & (dc < reach + p.cortex_t))
    not_gm = np.ones(u.size, dtype=bool)
    not_gm[band] = ~gm
    gm_flat = np.zeros(u.size, dtype=bool)
    gm_flat[band] = gm & ~sulcus
    drift = texture * np.float32(1.2)
    wm_vox = deep & not_gm.reshape(u.shape)
    gm_vox = gm_flat.reshape(u.shape)
    hu[wm_vox] = p.wm_hu + drift[wm_vox]
    tissue[wm_vox] = Tissue.WM
    hu[gm_vox] = p.gm_hu + drift[gm_vox]
    tissue[gm_vox] = Tissue.GM
    return depth


def build_anatomy(hc: HeadCoords, p: AnatomyParams, rng: np.random.Generator) -> Anatomy:
    """Render the head into HU on ``hc``'s grid (no blood, no scanner effects)."""
    shape = hc.shape
    hu = np.full(shape, -1000.0, dtype=np.float32)
    tissue = np.zeros(shape, dtype=np.uint8)
    d_in = inner_table_distance(hc, p)
    # One smooth field serves as the vault's bumps and the brain's density drift.
    texture = smooth_field(rng, hc.grid, 35.0)
    d_in += texture * np.float32(1.3)
    _shells(hc, p, d_in, hu, tissue, rng)
    floor_depth = skullbase.floor_depth(hc, p, d_in)
    depth = _cortex(hc, p, d_in, floor_depth, hu, tissue, rng, texture)
    landmarks: dict[str, tuple[float, float, float]] = {}
    brain.deep_structures(hc, p, hu, tissue, landmarks)
    brain.posterior_fossa(hc, p, depth, hu, tissue, landmarks)
    brain.cisterns(hc, p, hu, tissue, landmarks)
    skullbase.render(hc, p, d_in, floor_depth, hu, tissue, rng, landmarks)
    brain.dural_structures(hc, p, d_in, hu, tissue, landmarks)
    return Anatomy(hu=hu, tissue=tissue, d_in=d_in, params=p, landmarks=landmarks)
