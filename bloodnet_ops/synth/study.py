"""One study from its plan: geometry, anatomy, blood, mimics and scanner effects, in HU.

Everything random comes from ``np.random.default_rng(plan.seed)``, so a study is the same whoever
renders it. Writing DICOM is :mod:`.writer`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from bloodnet_ops.synth import hemorrhage, mimics, scanner
from bloodnet_ops.synth.anatomy import build_anatomy
from bloodnet_ops.synth.geometry import Grid, HeadCoords, index_box, rotation
from bloodnet_ops.synth.headparams import AnatomyParams, sample_anatomy
from bloodnet_ops.synth.hemorrhage import COMPANIONS, LEAD_WEIGHTS, Lesion
from bloodnet_ops.synth.plan import StudyPlan
from bloodnet_ops.synth.tissue import Subtype
from bloodnet_ops.synth.vendors import BY_KEY, VendorProfile

#: Sub-slices averaged into each slice of this thickness or more (slab partial volume).
SUBSLICE_MIN_THICKNESS = 3.9


@dataclass
class Geometry:
    """Axial geometry shared by the soft-tissue and bone series (mm, patient LPS)."""

    positions: np.ndarray  #: (nz,) slice centres along z, ascending
    thickness: float
    pixel_spacing: float  #: square pixels
    x0: float  #: x of the centre of column 0
    y0: float  #: y of the centre of row 0
    matrix: int
    fov: float
    recon_centre: tuple[float, float]

    @property
    def x(self) -> np.ndarray:
        return self.x0 + np.arange(self.matrix) * self.pixel_spacing

    @property
    def y(self) -> np.ndarray:
        return self.y0 + np.arange(self.matrix) * self.pixel_spacing


@dataclass
class Localizer:
    """A lateral scout: rows run down along -z, columns along +y."""

    hu: np.ndarray  #: (rows, cols) float32
    origin: tuple[float, float, float]  #: ImagePositionPatient of pixel (0, 0)
    spacing: float


@dataclass
class RenderedStudy:
    """A study in HU, ready to be encoded."""

    plan: StudyPlan
    profile: VendorProfile
    geometry: Geometry
    soft: np.ndarray  #: (nz, ny, nx) float32 HU, soft-tissue kernel
    bone: np.ndarray  #: (nz, ny, nx) float32 HU, bone kernel
    labels: np.ndarray  #: (nz, ny, nx) uint8 subtype codes
    outside: np.ndarray  #: (ny, nx) bool, outside the reconstruction circle
    localizer: Localizer
    kvp: float
    tube_ma: float
    lesions: list[Lesion] = field(default_factory=list)
    anatomy: AnatomyParams | None = None

    @property
    def subtypes(self) -> list[Subtype]:
        present = np.unique(self.labels)
        return [Subtype(int(c)) for c in present if c]

    def volume_ml(self) -> float:
        g = self.geometry
        return float(np.count_nonzero(self.labels)) * g.pixel_spacing**2 * g.thickness / 1000.0


def choose_subtypes(rng: np.random.Generator, lead: Subtype | None) -> list[Subtype]:
    """1-3 lesions: a lead subtype and sometimes its usual companions."""
    if lead is None:
        names = list(LEAD_WEIGHTS)
        w = np.array([LEAD_WEIGHTS[s] for s in names])
        lead = names[int(rng.choice(len(names), p=w / w.sum()))]
    out = [lead]
    for _ in range(2):
        if rng.random() < 0.35:
            comp = COMPANIONS[out[-1]]
            out.append(comp[int(rng.integers(0, len(comp)))])
    return out


def _geometry(rng: np.random.Generator, profile: VendorProfile, p: AnatomyParams, matrix: int,
              ) -> tuple[Geometry, np.ndarray, np.ndarray]:
    thickness = float(rng.choice(profile.thicknesses))
    fov = float(np.round(rng.uniform(*profile.fov), 1))
    ps = fov / matrix
    recon = (float(np.round(rng.uniform(-6, 6), 1)), float(np.round(rng.uniform(-14, 4), 1)))
    out_r = max(p.a, p.b) + p.skull_t + p.scalp_t + 3.0
    room = max(0.0, fov / 2 - out_r - 2.0)
    off = rng.uniform(-1, 1, 2) * min(room, 10.0)
    hz = float(np.round(rng.uniform(-260.0, 120.0), 1))
    centre = np.array([recon[0] + off[0], recon[1] + off[1] + 0.02 * p.b, hz])
    # The head lies rotated in the field: yaw up to 15 deg, pitch (chin up/down) and roll 10-15.
    rot = rotation(rng.uniform(-15, 15), rng.uniform(-15, 12), rng.uniform(-10, 10))
    coverage = rng.uniform(120.0, 150.0)
    # 48 slices cap the usual 2.5-5 mm protocols; thin-slice ones (a site's new scanner) get
    # as many as it takes to cover the head.
    n = int(np.clip(round(coverage / thickness), 24,
                    48 if thickness >= 2.5 else int(150 // thickness)))
    top = hz + (p.c + p.skull_t + p.scalp_t) * 0.98 + rng.uniform(-3.0, 4.0)
    positions = np.round(top - thickness * np.arange(n)[::-1], 2)
    geo = Geometry(positions=positions, thickness=thickness, pixel_spacing=ps,
                   x0=recon[0] - fov / 2 + ps / 2, y0=recon[1] - fov / 2 + ps / 2,
                   matrix=matrix, fov=fov, recon_centre=recon)
    return geo, centre, rot


def _subslices(geo: Geometry, head_z: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample positions (ascending) and the start index of each slice's group.

    Thick slices are slabs: where that matters (the skull base, where bone and brain share a
    slab, and the top slices cutting the vertex) two sub-slices are averaged; elsewhere one
    sample at the centre is enough and half the price."""
    pos = geo.positions
    if geo.thickness < SUBSLICE_MIN_THICKNESS:
        return pos.astype(np.float64), np.arange(pos.size)
    doubled = (pos < head_z - 2.0) | (pos > pos[-1] - 2.5 * geo.thickness)
    z: list[float] = []
    starts = []
    for zc, two in zip(pos, doubled, strict=True):
        starts.append(len(z))
        z.extend([zc - geo.thickness / 4, zc + geo.thickness / 4] if two else [zc])
    return np.asarray(z), np.asarray(starts)


def render_study(plan: StudyPlan, *, lesions: list[Subtype] | None = None) -> RenderedStudy:
    """Render one planned study. ``lesions`` forces the subtypes (previews)."""
    rng = np.random.default_rng(plan.seed)
    profile = BY_KEY[plan.profile_key]
    p = sample_anatomy(rng)
    planned: list[Lesion] = []
    if plan.positive or lesions:
        subtypes = lesions if lesions else choose_subtypes(rng, plan.lead)
        planned = hemorrhage.plan_lesions(rng, subtypes, p)
        for _ in range(plan.bleed_draws - 1):  # a population with larger bleeds
            alt = hemorrhage.plan_lesions(rng, subtypes, p)
            if sum(x.target_ml for x in alt) > sum(x.target_ml for x in planned):
                planned = alt
        p = hemorrhage.with_mass_effect(p, planned)
    mplan = mimics.plan_mimics(rng, strong=plan.strong_mimics)
    p = mimics.with_dense_sinus(p, mplan)
    if plan.fault == "contrast":
        p = replace(p, venous_hu=float(rng.uniform(150, 230)))
    geo, centre, rot = _geometry(rng, profile, p, plan.matrix)
    zf, starts = _subslices(geo, float(centre[2]))
    counts = np.diff(np.append(starts, zf.size))
    full = Grid(z=zf, y=geo.y, x=geo.x)
    out_t = p.skull_t * 1.5 + p.scalp_t + p.temporalis + 4.0
    crop = index_box(full, centre, rot, (-p.a * (1 + p.egg) - out_t, p.a * (1 + p.egg) + out_t),
                     (-p.b - out_t, p.b + out_t), (-300.0, 300.0))
    assert crop is not None, "the head must lie inside the field of view"
    grid = Grid(z=zf, y=geo.y[crop[1]], x=geo.x[crop[2]])
    hc = HeadCoords(grid, centre, rot)
    an = build_anatomy(hc, p, rng)
    mimics.paint_calcifications(an, hc, mplan, rng)
    labels_f = hemorrhage.render_lesions(an, hc, planned, rng)
    shape = (zf.size, geo.matrix, geo.matrix)
    hu_f = np.full(shape, -1000.0, dtype=np.float32)
    hu_f[:, crop[1], crop[2]] = an.hu
    if rng.random() < profile.holder:
        gap = p.skull_t + p.scalp_t + rng.uniform(4.0, 10.0)
        shell, cushion = scanner.head_holder(geo.y, geo.x, (centre[0], centre[1]),
                                             (p.a + gap + 6.0, p.b + gap))
        air = hu_f < -950
        hu_f[air & shell[None]] = np.float32(rng.uniform(150, 400))
        hu_f[air & cushion[None]] = np.float32(rng.uniform(-900, -750))
    two = np.flatnonzero(counts > 1)
    soft_anat = hu_f[starts]
    soft_anat[two] = 0.5 * (soft_anat[two] + hu_f[starts[two] + 1])
    del hu_f
    lab_full = np.zeros(shape, dtype=np.uint8)
    lab_full[:, crop[1], crop[2]] = labels_f
    labels = lab_full[starts]
    if two.size:
        # In a two-sample slab a voxel is blood when either sample is: half the slab.
        labels[two] = np.maximum(labels[two], lab_full[starts[two] + 1])
    ps = geo.pixel_spacing
    _calibration(rng, soft_anat, geo)
    kvp = float(rng.choice(profile.kvps))
    tube_ma = float(np.round(rng.uniform(120, 400)))
    sigma = scanner.dose_noise(rng.uniform(*profile.noise), kvp, tube_ma, geo.thickness)
    # Both kernels reconstruct the same projections, so they share one noise realisation: the
    # soft kernel shapes it (its noise power spectrum), the bone kernel keeps it sharp.
    white = rng.standard_normal(soft_anat.shape, dtype=np.float32)
    soft = scanner.blur(soft_anat, rng.uniform(0.35, 0.8), ps)
    soft += sigma * scanner.nps_noise(white, rng, ps)
    bone = scanner.sharpen(soft_anat, ps, rng.uniform(0.7, 1.2))
    bone += np.float32(sigma * rng.uniform(4.0, 7.0)) * white
    centre_px = ((geo.recon_centre[1] - geo.y0) / ps, (geo.recon_centre[0] - geo.x0) / ps)
    if rng.random() < 0.08:
        soft += scanner.rings(rng, soft.shape[1:], centre_px, ps)[None]
    if rng.random() < 0.07:
        scanner.motion(rng, soft, ps)
    _beam_hardening(rng, soft, hc, an.landmarks, geo, mplan)
    outside = scanner.recon_circle((geo.matrix, geo.matrix), centre_px, geo.fov / 2 / ps)
    loc_n = plan.matrix
    loc_sp = 300.0 / loc_n
    ly = centre[1] - 150.0 + loc_sp / 2 + np.arange(loc_n) * loc_sp
    lz = centre[2] + 110.0 - loc_sp / 2 - np.arange(loc_n) * loc_sp
    loc = Localizer(hu=scanner.lateral_localizer(p, centre, ly, lz, rng),
                    origin=(float(centre[0]), float(ly[0]), float(lz[0])), spacing=loc_sp)
    return RenderedStudy(plan=plan, profile=profile, geometry=geo, soft=soft, bone=bone,
                         labels=labels, outside=outside, localizer=loc, kvp=kvp,
                         tube_ma=tube_ma, lesions=planned,
                         anatomy=p)


def _calibration(rng: np.random.Generator, hu: np.ndarray, geo: Geometry) -> None:
    """Scanner-to-scanner CT-number differences: a small offset and gain on tissue, and cupping
    (the centre of the head a few HU darker than its periphery), in place."""
    offset = np.float32(rng.normal(0.0, 2.0))
    gain = np.float32(rng.uniform(0.98, 1.02))
    cup = np.float32(rng.uniform(-2.0, 12.0))  # beam-hardening cupping, up to 12 HU
    yy = (geo.y - geo.recon_centre[1])[:, None] / 80.0
    xx = (geo.x - geo.recon_centre[0])[None, :] / 80.0
    prof = (cup * (np.minimum(xx * xx + yy * yy, 1.5) - 0.5)).astype(np.float32)
    tissue = hu > -200
    hu[tissue] = (hu * gain + offset + prof[None])[tissue]


def _beam_hardening(rng: np.random.Generator, soft: np.ndarray, hc: HeadCoords,
                    landmarks: dict[str, tuple[float, float, float]], geo: Geometry,
                    m: mimics.MimicPlan) -> None:
    """Dark band and streaks between the petrous bones, in the slices that cut them."""
    if "petrous_l" not in landmarks:
        return
    pts = hc.to_patient(np.array([landmarks["petrous_l"], landmarks["petrous_r"]]))
    ps = geo.pixel_spacing
    ends = tuple(((pt[1] - geo.y0) / ps, (pt[0] - geo.x0) / ps) for pt in pts)
    zc = float(pts[:, 2].mean())
    for k, z in enumerate(geo.positions):
        wgt = float(np.exp(-0.5 * ((z - zc) / 9.0) ** 2))
        if wgt < 0.1:
            continue
        art = scanner.streaks(rng, soft.shape[1:], ends, m.streak_hu * wgt,  # type: ignore[arg-type]
                              rng.uniform(5.0, 9.0) / ps,
                              m.streak_lines)
        # Streaks live where the x-rays crossed dense bone: inside the head only.
        inside = soft[k] > -300
        soft[k] += art * inside
