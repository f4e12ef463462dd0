"""The skull base in the lowest slices: fossa floors, petrous ridges, mastoid and paranasal air,
the orbits with globes and lenses, and the soft tissue below.

These are what make the bottom slices of a head CT look like one (and what a model must not call
blood: dense bone edges, partial-volume bone, beam hardening between the petrous bones).
"""

from __future__ import annotations

import numpy as np

from bloodnet_ops.synth.geometry import HeadCoords, smooth_field
from bloodnet_ops.synth.headparams import (
    AnatomyParams,
    anterior_fossa_v,
    inner_front,
    petrous_line,
)
from bloodnet_ops.synth.shapes import air_cell_septa, ellipsoid_box, ellipsoid_rho2, smoothstep
from bloodnet_ops.synth.tissue import Tissue

Vec = tuple[float, float, float]
_TOP = -8.0  #: nothing of the skull base reaches above this w


def _pow4(x: np.ndarray) -> np.ndarray:
    x2 = x * x
    return x2 * x2


def _floor(u: np.ndarray, v: np.ndarray, p: AnatomyParams) -> np.ndarray:
    """w of the cranial floor under (u, v). Each fossa is a bowl: the anterior one slopes up to
    the front and domes over the orbits, the middle one is deepest under the temporal lobes, the
    posterior one under the cerebellar hemispheres; the sella sits high in the midline."""
    s = p.scale
    au = np.abs(u)
    f_ant = (p.ant_floor + 7.0 * np.clip((-v - 0.55 * p.b) / (0.35 * p.b), -1.0, 1.0)
             + 5.0 * np.exp(-(((au - 26.0 * s) / 11.0) ** 2) - ((v + 0.6 * p.b) / 16.0) ** 2)
             - 6.0 * np.exp(-((u / 7.0) ** 2)))
    f_mid = p.mid_floor + 10.0 * ((au - 36.0 * s) / 24.0) ** 2 + 8.0 * ((v + 10.0 * s) / 18.0) ** 2
    f_mid = np.minimum(f_mid, -24.0 * s)
    f_mid = f_mid + (-30.0 * s - f_mid) * np.exp(-_pow4(u / (13.0 * s)))
    f_post = p.post_floor + 9.0 * ((au - 25.0 * s) / 28.0) ** 2 + 7.0 * ((v - 42.0 * s) / 26.0) ** 2
    f_post = np.minimum(f_post, -36.0 * s)
    f = f_ant + (f_mid - f_ant) * smoothstep((v - anterior_fossa_v(u, p)) / 2.0)
    f = f + (f_post - f) * smoothstep((v - petrous_line(u, p)) / 2.0)
    # Foramen magnum: the floor opens around the medulla.
    fm = np.exp(-_pow4(u / (14.0 * s)) - _pow4((v - 16.0 * s) / (17.0 * s)))
    return (f - 30.0 * fm).astype(np.float32)


def _lower(hc: HeadCoords, p: AnatomyParams) -> tuple[slice, slice, slice] | None:
    return hc.box((-p.a - 20, p.a + 20), (-p.b - 30, p.b + 30), (-200.0, _TOP))


def floor_depth(hc: HeadCoords, p: AnatomyParams, d_in: np.ndarray) -> np.ndarray:
    """Height (mm) above the cranial floor inside the vault; 99 elsewhere (far above the skull
    base, or outside the inner table where it does not matter)."""
    out = np.full(hc.shape, 99.0, dtype=np.float32)
    b = _lower(hc, p)
    if b is not None:
        # a copy: reshape(-1) of a box that is not contiguous would silently copy anyway
        flat = out[b].reshape(-1).copy()
        idx = np.flatnonzero(d_in[b] > -1.0)
        u, v, w = (a.ravel()[idx] for a in hc.sub(b))
        flat[idx] = w - _floor(u, v, p)
        out[b] = flat.reshape(out[b].shape)
    return out


def render(
    hc: HeadCoords, p: AnatomyParams, d_in: np.ndarray, fdepth: np.ndarray, hu: np.ndarray,
    tissue: np.ndarray, rng: np.random.Generator, landmarks: dict[str, Vec],
) -> None:
    """Paint everything below the cranial floor, inside the skull's inner surface."""
    b = _lower(hc, p)
    if b is None:
        return
    s = p.scale
    fd_b = fdepth[b]
    dd_b = d_in[b]
    # Work on the voxels that can change only: below the floor, or near the petrous ridges.
    idx = np.flatnonzero(((fd_b <= 0) | (fd_b < 25)) & (dd_b > -1.5))
    u, v, w = (a.ravel()[idx] for a in hc.sub(b))
    fd, dd = fd_b.ravel()[idx], dd_b.ravel()[idx]
    sub_hu, sub_t = hu[b], tissue[b]
    flat_hu, flat_t = sub_hu.reshape(-1).copy(), sub_t.reshape(-1).copy()
    below = (fd <= 0) & (dd > -0.5)
    au = np.abs(u)
    v_pl = petrous_line(u, p)
    v_af = anterior_fossa_v(u, p)
    # Muscle and soft tissue fill the space under the skull base.
    vals = np.full(u.shape, 45.0, dtype=np.float32)
    codes = np.full(u.shape, Tissue.SOFT, dtype=np.uint8)
    # The bony plate of the floor: thin orbital roofs, thicker occipital bone, the sphenoid body.
    t_plate = np.where(v < v_af, 2.5, np.where(v < v_pl, 4.0, 6.0)).astype(np.float32)
    t_plate += 24.0 * np.exp(-_pow4(u / (14.0 * s))) * (v > v_af) * (v < v_pl + 4)
    plate = fd > -t_plate
    bone_val = 0.55 * p.cortical_hu + 0.45 * p.diploe_hu
    noise = rng.normal(0, 120, size=u.shape).astype(np.float32)
    vals = np.where(plate, bone_val + noise, vals)
    codes = np.where(plate, np.uint8(Tissue.BONE), codes)
    # Sphenoid sinus inside the sphenoid body.
    sph = ellipsoid_rho2(u, v, w, (0.0, -22.0 * s, -43.0 * s), (13.0 * s, 11.0 * s, 9.0 * s))
    vals = np.where(sph < 0.75, -920.0, np.where(sph < 1.0, bone_val, vals))
    codes = np.where(sph < 0.75, np.uint8(Tissue.AIR_CELLS),
                     np.where(sph < 1.0, np.uint8(Tissue.BONE), codes))
    new_hu = np.where(below, vals, flat_hu[idx])
    new_t = np.where(below, codes, flat_t[idx])
    # Petrous ridges: dense oblique walls from the clivus to the mastoids.
    ridge_top = -29.0 * s - 7.0 * np.clip(au / p.a, 0, 1)
    pw = 4.5 + 4.5 * np.clip(au / p.a, 0, 1)
    pet = (np.abs(v - v_pl) < pw) & (au > 9.0 * s) & (w < ridge_top) & (dd > -1.5)
    pet &= w > p.post_floor - 15
    pet_val = 0.92 * p.cortical_hu + noise * 1.25
    # Inner ear and internal auditory canal: small lucencies inside the petrous bone.
    iac = ellipsoid_rho2(au, v, w, (22.0 * s, float(petrous_line(22.0 * s, p)), -38.0 * s),
                         (6.0, 1.6, 1.8), yaw_deg=29.0) < 1
    new_hu = np.where(pet, np.where(iac, 10.0, pet_val), new_hu)
    new_t = np.where(pet, np.where(iac, np.uint8(Tissue.CSF), np.uint8(Tissue.BONE)), new_t)
    flat_hu[idx] = new_hu
    flat_t[idx] = new_t
    hu[b] = flat_hu.reshape(sub_hu.shape)
    tissue[b] = flat_t.reshape(sub_t.shape)
    _mastoids(hc, p, d_in, hu, tissue, rng)
    landmarks["petrous_l"] = (30.0 * s, float(petrous_line(30.0 * s, p)), -36.0 * s)
    landmarks["petrous_r"] = (-30.0 * s, float(petrous_line(30.0 * s, p)), -36.0 * s)
    _orbits(hc, p, d_in, hu, tissue)
    _ethmoid_nasal(hc, p, hu, tissue, rng)


def _mastoids(hc: HeadCoords, p: AnatomyParams, d_in: np.ndarray, hu: np.ndarray,
              tissue: np.ndarray, rng: np.random.Generator) -> None:
    """Mastoid air cells, postero-lateral, their extent set by pneumatisation."""
    s = p.scale
    for sd in (1.0, -1.0):
        u0 = p.a - 14 - 14 * p.mastoid
        vl = float(petrous_line(u0, p))
        b = hc.box((sd * u0, sd * (p.a + 8)), (vl - 4, vl + 40), (p.post_floor - 14, -34.0 * s))
        if b is None:
            continue
        u, v, w = hc.sub(b)
        dd = d_in[b]
        v_pl = petrous_line(u, p)
        mast = (sd * u > u0) & (v > v_pl - 2) & (v < v_pl + 12 + 18 * p.mastoid)
        mast &= (w < -36.0 * s) & (w > p.post_floor - 14) & (dd > -p.skull_t * 0.9) & (dd < 6)
        septa = air_cell_septa(smooth_field(rng, hc.grid, 3.0, box=b), 4.0, 0.35)
        hu[b][mast] = np.where(septa, 650.0, -850.0)[mast]
        tissue[b][mast] = np.where(septa, Tissue.BONE, Tissue.AIR_CELLS)[mast]


def _orbits(hc: HeadCoords, p: AnatomyParams, d_in: np.ndarray, hu: np.ndarray,
            tissue: np.ndarray) -> None:
    """Globes (vitreous, sclera, lens) in a cone of orbital fat with bony walls and the optic
    nerves; these override the vault's shells in front."""
    s = p.scale
    g_w = p.ant_floor - 14.0 * s
    g_u0 = 31.0 * s
    # Front of the inner table at the globe's (u, w); the globe's front sits just under the skin.
    g_v = inner_front(p, g_u0, g_w) - p.skull_t - p.scalp_t + 12.5
    for sd in (1.0, -1.0):
        g_u = sd * g_u0
        cone_c = (sd * 24.0 * s, g_v + 20.0, g_w - 1.0)
        cone_r = (14.0 * s, 25.0, 12.5)
        b = ellipsoid_box(hc, cone_c, cone_r, pad=4.0)
        if b is None:
            continue
        u, v, w = hc.sub(b)
        sub_hu, sub_t = hu[b], tissue[b]
        cone = ellipsoid_rho2(u, v, w, cone_c, cone_r, yaw_deg=-sd * 18)
        # The bony cone is open in front, where the globe sits.
        wall = (cone >= 1.0) & (cone < 1.16) & (d_in[b] > -p.skull_t - 2) & (v > g_v + 4.0)
        sub_hu[wall] = 0.5 * p.cortical_hu + 0.5 * p.diploe_hu
        sub_t[wall] = Tissue.BONE
        fat = cone < 1.0
        sub_hu[fat] = -95.0
        sub_t[fat] = Tissue.FAT
        apex = (sd * 14.0 * s, g_v + 40.0, g_w - 2.0)
        mid = tuple((np.add((g_u, g_v, g_w), apex) / 2).tolist())
        nerve = ellipsoid_rho2(u, v, w, mid, (2.2, 22.0, 2.2), yaw_deg=-sd * 22) < 1
        for off in (-9.0, 9.0):
            rc = (mid[0] + off * s, mid[1] + 2.0, mid[2])
            nerve |= ellipsoid_rho2(u, v, w, rc, (2.4, 18.0, 3.2), yaw_deg=-sd * 18) < 1
        nerve &= fat
        sub_hu[nerve] = 38.0
        sub_t[nerve] = Tissue.SOFT
        globe = ellipsoid_rho2(u, v, w, (g_u, g_v, g_w), (11.8, 11.5, 11.8))
        sub_hu[globe < 1] = np.where(globe[globe < 1] > 0.84, 40.0, 10.0)
        sub_t[globe < 1] = Tissue.GLOBE
        lens = ellipsoid_rho2(u, v, w, (g_u, g_v - 8.5, g_w), (4.3, 1.9, 4.3)) < 1
        sub_hu[lens] = 95.0
        # Eyelid soft tissue in front of the globe, in place of the vault shells.
        lid = (v < g_v) & (globe >= 1) & (ellipsoid_rho2(u, v, w, (g_u, g_v, g_w),
                                                          (15.0, 15.0, 14.0)) < 1)
        lid &= sub_t != Tissue.AIR
        sub_hu[lid] = 40.0
        sub_t[lid] = Tissue.SOFT


def _ethmoid_nasal(hc: HeadCoords, p: AnatomyParams, hu: np.ndarray, tissue: np.ndarray,
                   rng: np.random.Generator) -> None:
    """Ethmoid air cells between the orbits; nasal cavity and maxillary sinuses under them."""
    s = p.scale
    v0 = inner_front(p, 0.0, p.ant_floor - 20.0) - p.skull_t + 4.0
    v1 = float(anterior_fossa_v(0.0, p)) - 3.0
    w1 = p.ant_floor - 5.0
    b = hc.box((-34.0 * s, 34.0 * s), (v0, v1 + 20), (w1 - 60.0, w1))
    if b is None:
        return
    u, v, w = hc.sub(b)
    sub_hu, sub_t = hu[b], tissue[b]
    cells = air_cell_septa(smooth_field(rng, hc.grid, 3.0, box=b), 6.0, 0.35)
    vc, vr = 0.5 * (v0 + 2 + v1), 0.5 * (v1 - v0 - 2)
    eth = ((u / (10.5 * s)) ** 2 + ((v - vc) / vr) ** 4 < 1) & (w > w1 - 28.0)
    sub_hu[eth] = np.where(cells, 300.0, -880.0)[eth]
    sub_t[eth] = np.where(cells, Tissue.BONE, Tissue.AIR_CELLS)[eth]
    nasal = (np.abs(u) < 12.0 * s) & (w <= w1 - 28.0) & (v > v0) & (v < v1 + 15)
    septum = np.abs(u) < 1.0
    turb = (np.abs(np.abs(u) - 9.5 * s) < 2.5) & (np.sin(w / 3.0) > 0.0)
    sub_hu[nasal] = np.where(septum, 450.0, np.where(turb, 45.0, -950.0))[nasal]
    sub_t[nasal] = np.where(septum, Tissue.BONE, np.where(turb, Tissue.SOFT, Tissue.AIR_CELLS))[
        nasal]
    for sd in (1.0, -1.0):
        rho = ellipsoid_rho2(u, v, w, (sd * 24.0 * s, v0 + 24.0, w1 - 44.0), (13.0, 17.0, 15.0))
        wall = (rho < 1.0) & (rho >= 0.8)
        sub_hu[wall] = 400.0
        sub_t[wall] = Tissue.BONE
        sub_hu[rho < 0.8] = -930.0
        sub_t[rho < 0.8] = Tissue.AIR_CELLS
