"""An independent head-CT phantom for a generalisation hold-out.

Written without looking at ``bloodnet_ops.synth``: its own anatomy, its own hemorrhage shapes, its
own vendor conventions, so that a model trained on the project's generator can be checked on data
it has never seen the like of (the outside check uses "an independent generator with other vendor
conventions and other hemorrhage shapes"). Only numpy, scipy and pydicom.

Anatomy (head coordinates in mm: x left, y posterior, z superior, origin mid-brain): an egg-shaped
ellipsoidal head; scalp with a thin fat layer and temporal muscle; a skull with dense tables and a
lower-density diploë; CSF over the convexity, sulci as the zero set of a smooth random field,
interhemispheric and Sylvian fissures, basal cisterns; grey and white matter, deep nuclei, lateral,
third and fourth ventricles of varied size and asymmetry; a skull base (anterior and middle fossa
floors, petrous ridges, clivus, air cells, orbits) that the lowest slices cut through.

Hemorrhage, 1-3 foci of 0.3-60 mL: multi-lobed IPH (thresholded sums of Gaussians, optional
hypodense rim), SDH crescents of varying thickness (convexity or along the falx), biconvex EDH,
SAH filling sulci / fissures / cisterns, IVH as a dependent fluid level (or a cast). Every focus is
sized on a fine isotropic grid, and ``volume_ml`` is that measured volume.

Mimics (in every study, independent of the label): pineal, choroid-plexus, basal-ganglia and falx
calcification, a dense dural sinus, partial-volume skull base, beam hardening and a mild cupping
rim under the inner table.

Vendor profiles differ in pixel representation, BitsStored, slope/intercept, padding, matrix,
kernel, slice order and file naming. Output: ``DIR/<site>/...`` DICOM (CT Image Storage, explicit
VR little endian), ``DIR/labels.csv`` (DESIGN.md's columns), ``DIR/extras.csv`` (mimics, slice
thickness, matrix, noise: for the benchmark's breakdowns) and ``DIR/masks/<study_uid>.npz``
(``label`` z,y,x uint8, 1..5 = EDH,SDH,SAH,IPH,IVH, where at least half the slab is blood; ascending
z; ``z`` positions in mm).

Cost: about 2.4 s of one core per 512² study (render, noise, DICOM); ``--workers`` runs studies in
parallel processes. Studies and UIDs are seeded per study, so any worker count writes the same
files.

Usage::

    python bench/holdout_phantom.py --out DIR --studies N --seed S [--matrix 512]
        [--sites 4] [--positive-rate 0.5] [--workers 1] [--sheet sheet.png]

``--studies 0 --sheet PNG`` only draws the contact sheet of an existing ``--out`` folder.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # as a script, one BLAS thread per process (before numpy loads)
    for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_v, "1")

import argparse
import csv
import math
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

SUBTYPES = ("EDH", "SDH", "SAH", "IPH", "IVH")
CODE = {s: i + 1 for i, s in enumerate(SUBTYPES)}
F32 = np.float32
#: blood HU range used by the generator (before noise): acute clot and unclotted blood
BLOOD_HU = (45.0, 90.0)


# ------------------------------------------------------------------------- vendor profiles
@dataclass(frozen=True, slots=True)
class Vendor:
    site: str
    manufacturer: str
    model: str
    signed: bool
    bits_stored: int
    slope: float
    intercept: float
    padding: int | None  #: declared PixelPaddingValue outside the reconstruction circle
    matrix_scale: float  #: matrix = round(--matrix * scale)
    descending: bool  #: InstanceNumber 1 at the vertex
    thickness: tuple[float, ...]
    fovs: tuple[float, ...]
    kernel: str
    blur: int  #: binomial smoothing passes on the image (reconstruction kernel)
    noise_blur: int  #: passes on the noise (noise texture)
    noise: tuple[float, float]  #: SD range (HU)
    hu_offset: float  #: water calibration offset of this scanner
    naming: str  #: "uid" (site/study/series/sop.dcm) or "im" (site/ACC/SE/IM00001, no suffix)
    headrest: bool

    def stored_range(self) -> tuple[int, int]:
        if self.signed:
            return -(1 << (self.bits_stored - 1)), (1 << (self.bits_stored - 1)) - 1
        return 0, (1 << self.bits_stored) - 1


VENDORS: tuple[Vendor, ...] = (
    Vendor("holdout-north", "Aurelia Medical", "AX-64", False, 12, 1.0, -1024.0, None, 1.0,
           False, (5.0,), (220.0, 230.0, 240.0), "STD-H", 1, 1, (3.0, 5.0), 1.5, "uid", True),
    Vendor("holdout-east", "Kestrel Systems", "K-Vision 128", True, 16, 1.0, 0.0, -2000, 1.0,
           True, (2.5, 3.0), (230.0, 240.0, 250.0), "FC21", 1, 1, (3.0, 4.5), -2.0, "im", False),
    Vendor("holdout-south", "Orison", "Helix 40", False, 16, 0.5, -1024.0, None, 0.75,
           False, (4.0, 5.0), (220.0, 240.0), "B-SHARP", 0, 0, (4.5, 6.5), 3.0, "uid", True),
    Vendor("holdout-west", "Vantage CT", "V16", False, 12, 2.0, -1024.0, None, 1.0,
           False, (3.0, 3.75), (225.0, 245.0), "SOFT", 2, 1, (3.0, 4.5), -3.5, "uid", False),
)


# ----------------------------------------------------------------------------- geometry
@dataclass(slots=True)
class Grid:
    """A rectilinear grid in scanner (patient LPS) coordinates, ascending 1D axes in mm."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z.size, self.y.size, self.x.size)

    def sub(self, sl: tuple[slice, slice, slice]) -> Grid:
        return Grid(self.x[sl[2]], self.y[sl[1]], self.z[sl[0]])


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cz, sz = math.cos(yaw), math.sin(yaw)
    cx, sx = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(roll), math.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


@dataclass(slots=True)
class Waves:
    """A smooth random field: a sum of plane waves (unit variance), evaluated separably."""

    k: np.ndarray  #: (n, 3) wave vectors in head coordinates (rad/mm)
    phase: np.ndarray  #: (n,)

    @classmethod
    def make(cls, rng: np.random.Generator, n: int, lam: tuple[float, float]) -> Waves:
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        lengths = rng.uniform(*lam, size=n)
        return cls(d * (2 * np.pi / lengths)[:, None], rng.uniform(0, 2 * np.pi, n))


def _ellipsoid_q(u: tuple[np.ndarray, np.ndarray, np.ndarray], c: np.ndarray,
                 r: np.ndarray) -> np.ndarray:
    """Normalised squared radius of an axis-aligned (head frame) ellipsoid."""
    return (((u[0] - F32(c[0])) / F32(r[0])) ** 2 + ((u[1] - F32(c[1])) / F32(r[1])) ** 2
            + ((u[2] - F32(c[2])) / F32(r[2])) ** 2)


# ----------------------------------------------------------------------------- hemorrhage
@dataclass(slots=True)
class Focus:
    """One hemorrhage focus; ``mask(F)`` is its exact region on any grid's fields."""

    kind: str
    hu: float
    centre: np.ndarray  #: head coordinates of the box centre
    radius: float  #: box half-size (mm)
    p: dict = field(default_factory=dict)
    volume_ml: float = 0.0
    rim: float = 0.0  #: HU drop of the oedema rim (IPH)

    def field(self, F: Fields) -> np.ndarray:
        """A scalar whose sub-level set {field < level} is the focus (inf outside)."""
        p = self.p
        ux, uy, uz = F.ux, F.uy, F.uz
        inf = F32(np.inf)
        if self.kind in ("SDH", "EDH") and p.get("falcine"):
            q = (((uy - p["y0"]) / p["ly"]) ** 2 + ((uz - p["z0"]) / p["lz"]) ** 2).astype(F32)
            prof = np.clip(1 - q, 0, None) ** p["pow"]
            dist = p["side"] * ux - F32(F.ph.falx_w)
            ok = (q < 1) & (dist >= 0) & F.fissure_region & (F.db > 1.0)
            return np.where(ok, dist / np.maximum(prof, 1e-3), inf)
        if self.kind == "EDH":  # biconvex: a flattened ellipsoid cut by the inner table
            n0, e1, e2, c = p["n0"], p["e1"], p["e2"], self.p["p0"]
            dx, dy, dz = ux - F32(c[0]), uy - F32(c[1]), uz - F32(c[2])
            a = (dx * F32(e1[0]) + dy * F32(e1[1]) + dz * F32(e1[2])) / F32(p["l1"])
            b = (dx * F32(e2[0]) + dy * F32(e2[1]) + dz * F32(e2[2])) / F32(p["l2"])
            n = dx * F32(n0[0]) + dy * F32(n0[1]) + dz * F32(n0[2])
            ok = (F.db >= 0) & F.above_floor
            return np.where(ok, np.sqrt(a * a + b * b + n * n), inf)
        if self.kind == "SDH":
            r = np.sqrt(ux * ux + uy * uy + uz * uz) + F32(1e-3)
            n0, e1, e2 = p["n0"], p["e1"], p["e2"]
            c = (ux * F32(n0[0]) + uy * F32(n0[1]) + uz * F32(n0[2])) / r
            a = (ux * F32(e1[0]) + uy * F32(e1[1]) + uz * F32(e1[2])) / r / F32(p["sa"])
            b = (ux * F32(e2[0]) + uy * F32(e2[1]) + uz * F32(e2[2])) / r / F32(p["sb"])
            q = a * a + b * b
            prof = np.clip(1 - q, 0, None) ** F32(p["pow"])
            prof = prof * (1 + F32(p["wobble"]) * F.tex)
            ok = (c > 0) & (q < 1) & (F.db >= 0) & F.above_floor
            ok &= p["side"] * ux > F.ph.falx_w  # the falx stops a subdural collection
            return np.where(ok, F.db / np.maximum(prof, 1e-3), inf)
        if self.kind == "IPH":
            g = np.zeros(F.shape, F32)
            for c, s, a in zip(p["cs"], p["ss"], p["as"]):
                g += F32(a) * np.exp(-_ellipsoid_q((ux, uy, uz), c, np.array([s, s, s])) / 2)
            ok = F.parenchyma & (F.db > 2.0)
            return np.where(ok, -g, inf)  # blood where g > level
        if self.kind == "SAH":
            d2 = (ux - F32(self.centre[0])) ** 2 + (uy - F32(self.centre[1])) ** 2 \
                + ((uz - F32(self.centre[2])) * F32(p["zs"])) ** 2
            d = np.sqrt(d2) * np.clip(1 + F32(0.25) * F.tex, 0.7, 1.3)
            return np.where(F.csf_ext, d, inf)
        if self.kind == "IVH":
            vent = F.ventricle_ids
            ok = np.isin(vent, p["ids"])
            ys = np.broadcast_to(F.sy[None, :, None], F.shape)  # scanner y: gravity (supine)
            return np.where(ok, -ys if not p["cast"] else F32(0), inf)
        raise ValueError(self.kind)

    def mask(self, F: Fields) -> np.ndarray:
        return self.field(F) < self.p["level"]


# ----------------------------------------------------------------------------- the phantom
class Phantom:
    """All random anatomy, mimics and foci of one study; ``render`` evaluates them on a grid."""

    def __init__(self, rng: np.random.Generator, *, positive: bool, vendor: Vendor,
                 matrix: int) -> None:
        u = rng.uniform
        self.rng = rng
        self.vendor = vendor
        # head shape (outer surface), pose in the scanner
        self.A, self.B = u(68, 78), u(88, 100)
        self.C, self.C_low = u(88, 100), u(120, 150)
        self.egg = u(0.04, 0.11)
        self.R = _rotation(math.radians(u(-7, 7)), math.radians(u(-10, 8)),
                           math.radians(u(-4, 4)))
        self.c0 = np.array([u(-10, 10), u(-18, 12), u(-140, -40)])
        self.scalp, self.temporalis, self.fat_w = u(4, 6.5), u(3, 7), u(0.6, 1.8)
        self.k0, self.k_front = u(5, 7.5), u(0.5, 2.5)
        self.table_hu, self.diploe_hu = u(1350, 1800), u(650, 900)
        self.table_frac = u(0.22, 0.34)
        self.scalp_hu = u(35, 48)
        # brain
        atrophy = u(0, 1) ** 1.5
        self.atrophy = atrophy
        self.csf_w = 0.6 + 2.4 * atrophy
        self.grey_w = u(2.2, 3.4)
        self.sulc_w = 0.14 + 0.25 * atrophy  # half-width of sulci in field units
        self.sulc_depth = u(11, 18)
        self.gyral_w = u(0.35, 0.6)
        self.white_hu = u(23, 30)
        self.grey_hu = self.white_hu + u(6, 11)
        self.csf_hu = u(2, 12)
        self.nuclei_hu = self.white_hu + u(4, 8)
        self.falx_w = u(0.8, 1.4) + 1.2 * atrophy
        self.falx_hu = u(42, 55)
        self.sylvian_w = 0.8 + 2.5 * atrophy
        self.cistern_w = 2.0 + 3.0 * atrophy
        vent = u(0.8, 1.25) + 0.7 * atrophy  # hydrocephalus ex vacuo in the atrophic
        self.vent_scale = (vent * u(0.8, 1.2), vent * u(0.8, 1.2))  # asymmetric
        self.vent_shift = u(-3, 3)
        self.tex_amp = u(1.0, 2.5)
        self.sulc = Waves.make(rng, 10, (16, 30))
        self.texw = Waves.make(rng, 8, (6, 18))
        self.cells = Waves.make(rng, 24, (4, 10))
        # skull base
        self.floor_ant = u(-32, -24)
        self.floor_mid = u(-50, -42)
        self.petrous_top = u(-32, -24)
        self.sella_z = u(-30, -24)
        # pathology-independent mimics and artefacts
        self.sss_hu = u(62, 70) if u() < 0.22 else u(40, 52)  # dense sinus in some
        self.ts_hu = self.sss_hu - u(0, 4)
        self.ts_z = u(-26, -16)
        self.cup = u(0, 4)
        self.bh = u(8, 22) if u() < 0.6 else 0.0
        self.calcs = self._calcifications()
        # acquisition
        self.thickness = float(rng.choice(vendor.thickness))
        self.fov = float(rng.choice(vendor.fovs)) + float(u(-2, 2))
        self.matrix = int(round(matrix * vendor.matrix_scale / 16) * 16)
        self.spacing = round(self.fov / self.matrix, 6)
        self.noise_sd = float(np.clip(u(*vendor.noise) * math.sqrt(5 / self.thickness), 3, 8))
        n_cover = u(135, 165) / self.thickness
        self.n_slices = int(np.clip(round(n_cover), 24, 40))
        cover = self.n_slices * self.thickness
        z_lo = u(-40, -30) if cover >= 130 else u(-30, -20)
        self.scan_z = self.c0[2] + z_lo + self.thickness * (np.arange(self.n_slices) + 0.5)
        self.foci: list[Focus] = []
        if positive:
            self._make_foci()

    @property
    def mimics(self) -> list[str]:
        """Names of the mimics and artefacts in this study (for per-mimic specificity)."""
        out = sorted({name for name, *_ in self.calcs})
        if self.sss_hu >= 60:
            out.append("dense_sinus")
        if self.bh:
            out.append("beam_hardening")
        return out

    # ------------------------------------------------------------------ coordinates
    def head_coords(self, g: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = (g.x - self.c0[0]).astype(F32)
        Y = (g.y - self.c0[1]).astype(F32)
        Z = (g.z - self.c0[2]).astype(F32)
        R = self.R.astype(F32)
        out = []
        for i in range(3):
            yz = R[i, 1] * Y[None, :, None] + R[i, 2] * Z[:, None, None]
            out.append(yz + R[i, 0] * X[None, None, :])
        return out[0], out[1], out[2]

    def to_scanner(self, u: np.ndarray) -> np.ndarray:
        return self.R.T @ np.asarray(u, float) + self.c0

    def box(self, g: Grid, centre: np.ndarray, radius: float
            ) -> tuple[slice, slice, slice] | None:
        p = self.to_scanner(centre)
        sl = []
        for ax, c in ((g.z, p[2]), (g.y, p[1]), (g.x, p[0])):
            a = int(np.searchsorted(ax, c - radius))
            b = int(np.searchsorted(ax, c + radius, side="right"))
            if b <= a:
                return None
            sl.append(slice(a, b))
        return sl[0], sl[1], sl[2]

    def waves(self, w: Waves, g: Grid) -> np.ndarray:
        """sum_k cos(k·u + phi) / sqrt(n/2) on the grid, as two real matrix products."""
        k = w.k @ self.R  # k·R(p - c0) = (R^T k)·p - ...
        ph = w.phase - k @ self.c0
        ax = np.outer(k[:, 0], g.x)
        ay = np.outer(k[:, 1], g.y)
        az = np.outer(k[:, 2], g.z) + ph[:, None]
        cy, sy = np.cos(ay)[:, None, :], np.sin(ay)[:, None, :]
        cz, sz = np.cos(az)[:, :, None], np.sin(az)[:, :, None]
        n = k.shape[0]
        re = (cz * cy - sz * sy).astype(F32).reshape(n, -1)  # cos(az + ay)
        im = (sz * cy + cz * sy).astype(F32).reshape(n, -1)  # sin(az + ay)
        out = re.T @ np.cos(ax).astype(F32) - im.T @ np.sin(ax).astype(F32)
        out *= F32(math.sqrt(2.0 / n))
        return out.reshape(g.shape)

    def outer_radius(self, v: np.ndarray) -> float:
        """Distance from the origin to the outer surface along unit direction v."""
        cz = self.C if v[2] > 0 else self.C_low
        ax = self.A * (1 - self.egg * min(1.0, max(0.0, -v[1])))
        return 1.0 / math.sqrt((v[0] / ax) ** 2 + (v[1] / self.B) ** 2 + (v[2] / cz) ** 2)

    def inner_radius(self, v: np.ndarray) -> float:
        """Distance from the origin to the inner table along unit direction v."""
        lat = v[0] ** 2
        k = self.k0 * (1 - 0.3 * lat) + self.k_front * v[1] ** 2
        s = self.scalp + self.temporalis * lat * lat * min(1.0, max(0.0, (0.45 - v[2]) / 0.3))
        return self.outer_radius(v) - s - k

    # ------------------------------------------------------------------ mimics
    def _calcifications(self) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
        """(name, centre, radii, HU) ellipsoids: pineal, choroid plexus, basal ganglia, falx."""
        rng, u = self.rng, self.rng.uniform
        out: list[tuple[str, np.ndarray, np.ndarray, float]] = []
        if u() < 0.55:  # pineal: one to three dots behind the third ventricle
            c = np.array([u(-1, 1), u(22, 28), u(0, 6)])
            for _ in range(int(rng.integers(1, 4))):
                out.append(("pineal", c + rng.normal(0, 1.2, 3), np.full(3, u(1.0, 3.0)),
                            u(150, 600)))
        if u() < 0.5:  # choroid plexus in the atria, bilateral, punctate or curvilinear
            for side in (-1, 1):
                c = np.array([side * u(14, 19), u(22, 30), u(6, 12)])
                arc = u() < 0.5
                for j in range(4 if arc else 1):
                    off = np.array([side * 1.5 * j, 2.0 * j, -0.8 * j]) if arc else 0
                    out.append(("choroid", c + off,
                                np.array([u(1.2, 2.5), u(1.5, 3.5), u(1.2, 2.5)]), u(120, 400)))
        if u() < 0.18:  # globus pallidus, faint punctate
            for side in (-1, 1):
                c = np.array([side * u(15, 19), u(-6, 0), u(-2, 3)])
                for _ in range(int(rng.integers(1, 4))):
                    out.append(("basal_ganglia", c + rng.normal(0, 1.5, 3),
                                np.full(3, u(0.8, 1.8)), u(100, 260)))
        if u() < 0.15:  # falx plaque: curvilinear along the midline
            c = np.array([0.0, u(-40, 40), u(35, 60)])
            out.append(("falx", c, np.array([1.2, u(4, 9), u(1.5, 3)]), u(200, 600)))
        return out

    # ------------------------------------------------------------------ foci
    def _direction(self, az_deg: float, el_deg: float, side: int) -> np.ndarray:
        az, el = math.radians(az_deg), math.radians(el_deg)
        return np.array([side * math.cos(el) * math.cos(az), math.cos(el) * math.sin(az),
                         math.sin(el)])

    def _scan_ok(self, centre: np.ndarray, margin: float = 4.0) -> bool:
        z = self.to_scanner(centre)[2]
        return self.scan_z[0] + margin <= z <= self.scan_z[-1] - margin

    def _make_foci(self) -> None:
        rng, u = self.rng, self.rng.uniform
        n = int(rng.choice([1, 2, 3], p=[0.58, 0.3, 0.12]))
        kinds = list(rng.choice(SUBTYPES, size=n, p=[0.1, 0.28, 0.2, 0.26, 0.16]))
        tries = 0
        while kinds or not self.foci:  # a positive study always gets at least one focus
            kind = kinds.pop(0) if kinds else str(rng.choice(SUBTYPES))
            target = math.exp(u(math.log(0.3), math.log(50.0))) / n ** 0.5
            for _ in range(6):  # a few draws until one lands in the scanned range with volume
                f = getattr(self, f"_make_{kind.lower()}")(target)
                if f is not None and f.volume_ml >= 0.05:
                    self.foci.append(f)
                    break
            tries += 1
            if tries > 40:
                raise RuntimeError("no hemorrhage focus fits this head")

    def _fine_fields(self, centre: np.ndarray, radius: float, target_ml: float,
                     thin: float = 99.0) -> Fields:
        """Fields on an isotropic grid around a focus (clipped to the scanned slab)."""
        h = float(np.clip((target_ml * 1000) ** (1 / 3) / 14, 0.35, 1.2))
        h = min(h, max(thin / 3, 0.35))
        h = max(h, (8 * radius ** 3 / 2e6) ** (1 / 3))  # at most ~2 M voxels
        p = self.to_scanner(centre)
        z0 = max(p[2] - radius, self.scan_z[0] - self.thickness / 2)
        z1 = min(p[2] + radius, self.scan_z[-1] + self.thickness / 2)
        axes = [np.arange(c - radius + h / 2, c + radius, h) for c in p[:2]]
        zs = np.arange(z0 + h / 2, z1, h) if z1 > z0 + h else np.array([p[2]])
        return Fields(self, Grid(axes[0], axes[1], zs), voxel=h ** 3)

    def _finish(self, f: Focus, F: Fields, target_ml: float, lo: float, hi: float,
                level_of=None) -> Focus | None:
        """Pick the level giving the target volume (a quantile of the field), within [lo, hi],
        excluding earlier foci; record the measured volume."""
        v = f.field(F)
        for prev in self.foci:
            if np.linalg.norm(prev.centre - f.centre) < prev.radius + f.radius:
                v = np.where(prev.mask(F), F32(np.inf), v)
        vals = np.sort(v[np.isfinite(v)].ravel())
        if vals.size == 0:
            return None
        n = round(target_ml * 1000 / F.voxel)
        level = float(vals[min(max(n, 1), vals.size) - 1]) + 1e-4
        level = float(np.clip(level, lo, hi))
        f.p["level"] = level
        f.volume_ml = float(np.count_nonzero(v < level) * F.voxel / 1000)
        return f

    def _make_sdh(self, target: float) -> Focus | None:
        u = self.rng.uniform
        side = int(self.rng.choice([-1, 1]))
        if u() < 0.15:  # along the falx (interhemispheric)
            ly, lz = u(15, 40), u(10, 25)
            c = np.array([side * self.falx_w, u(-30, 40), u(30, 55)])
            if not self._scan_ok(c):
                return None
            f = Focus("SDH", u(55, 80), c, max(ly, lz) + 2,
                      {"falcine": True, "side": side, "y0": c[1], "z0": c[2], "ly": ly,
                       "lz": lz, "pow": u(0.4, 0.8)})
            return self._finish(f, self._fine_fields(c, f.radius, target, thin=2.0), target,
                                0.8, 8.0)
        thick = math.exp(u(math.log(1.5), math.log(4.0))) if target < 3 or u() < 0.3 \
            else math.exp(u(math.log(3.5), math.log(16.0)))
        area = target * 1000 / (0.55 * thick)
        n0 = self._direction(u(-75, 75), u(-15, 55), side)
        rin = self.inner_radius(n0)
        alpha = min(math.sqrt(area / math.pi) / rin, math.radians(75))
        asp = u(1.0, 2.2)
        sa, sb = math.sin(min(alpha * asp ** 0.5, 1.35)), math.sin(alpha / asp ** 0.5)
        e1 = np.cross([0, 0, 1.0], n0)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(n0, e1)
        centre = n0 * (rin - thick / 2)
        if not self._scan_ok(centre, margin=0):
            return None
        radius = rin * max(sa, sb) + thick * 2 + 3
        f = Focus("SDH", u(50, 80), centre, radius,
                  {"n0": n0, "e1": e1, "e2": e2, "sa": sa, "sb": sb, "pow": u(0.25, 0.6),
                   "wobble": u(0.05, 0.25), "side": side})
        return self._finish(f, self._fine_fields(centre, radius, target, thin=thick), target,
                            1.0, min(20.0, radius - thick / 2 - 1))

    def _make_edh(self, target: float) -> Focus | None:
        u = self.rng.uniform
        side = int(self.rng.choice([-1, 1]))
        n0 = self._direction(u(-60, 60), u(-15, 35), side)
        rin = self.inner_radius(n0)
        e1 = np.cross([0, 0, 1.0], n0)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(n0, e1)
        l1, l2 = u(2.2, 3.6), u(1.8, 3.0)  # lens extent per mm of its thickness
        thick = (target * 1000 / (2.1 * l1 * l2)) ** (1 / 3)
        p0 = n0 * (rin + u(0.0, 0.25) * thick)
        if not self._scan_ok(p0 - n0 * thick / 2, margin=0):
            return None
        radius = 2.2 * thick * max(l1, l2) + 4
        f = Focus("EDH", u(58, 88), p0 - n0 * thick / 2, radius,
                  {"n0": n0, "e1": e1, "e2": e2, "l1": l1, "l2": l2, "p0": p0,
                   "swirl": u() < 0.25})
        return self._finish(f, self._fine_fields(f.centre, radius, target, thin=thick), target,
                            1.0, min(30.0, (radius - 1) / max(l1, l2)))

    def _make_iph(self, target: float) -> Focus | None:
        rng, u = self.rng, self.rng.uniform
        if u() < 0.5:  # deep: putamen / thalamus
            side = rng.choice([-1, 1])
            c = np.array([side * u(12, 26), u(-12, 10), u(-6, 14)])
        else:  # lobar
            v = self._direction(u(-90, 90), u(-20, 60), int(rng.choice([-1, 1])))
            c = v * (self.inner_radius(v) - u(10, 28))
        if not self._scan_ok(c):
            return None
        size = (target * 1000) ** (1 / 3) * 0.55
        k = int(rng.integers(2, 7))
        cs = [c + rng.normal(0, size * 0.55, 3) for _ in range(k)]
        ss = [size * u(0.35, 0.75) for _ in range(k)]
        amps = [u(0.5, 1.2) for _ in range(k)]
        radius = size * 2.4 + 4
        f = Focus("IPH", u(52, 85), c, radius, {"cs": cs, "ss": ss, "as": amps},
                  rim=u(7, 14) if u() < 0.5 else 0.0)
        f.p["rim_w"] = u(0.45, 0.75)
        return self._finish(f, self._fine_fields(c, radius, target), target, -1.5, -0.15)

    def _make_sah(self, target: float) -> Focus | None:
        rng, u = self.rng, self.rng.uniform
        r = u()
        if r < 0.4:  # basal cisterns and Sylvian fissures (aneurysmal pattern)
            c = np.array([u(-8, 8), u(-14, 0), u(-16, -6)])
        elif r < 0.85:  # convexity sulci
            v = self._direction(u(-90, 90), u(0, 60), int(rng.choice([-1, 1])))
            c = v * (self.inner_radius(v) - 4)
        else:  # interhemispheric
            c = np.array([0.0, u(-40, 30), u(25, 55)])
        if not self._scan_ok(c, margin=0):
            return None
        radius = 48.0
        f = Focus("SAH", u(45, 72), c, radius, {"zs": u(0.8, 1.6)})
        return self._finish(f, self._fine_fields(c, radius, target), target, 3.0, 32.0)

    def _make_ivh(self, target: float) -> Focus | None:
        u = self.rng.uniform
        cast = u() < 0.25
        if cast:
            ids = [3] if u() < 0.5 else [4]
            c = np.array([0.0, 0.0, 4.0]) if ids == [3] else np.array([0.0, 30.0, -28.0])
            radius = 18.0
        else:
            side = int(self.rng.choice([0, 1]))
            ids = [1 + side] if u() < 0.75 else [1, 2]
            c = np.array([0.0, 6.0, 8.0])
            radius = 62.0
        if not self._scan_ok(c, margin=0):
            return None
        f = Focus("IVH", u(48, 75), c, radius, {"ids": ids, "cast": cast})
        F = self._fine_fields(c, radius, min(target, 5.0))
        if cast:
            return self._finish(f, F, 99.0, 0.5, 0.5)
        return self._finish(f, F, target, -1e4, 1e4)

    # ------------------------------------------------------------------ rendering
    def render(self, g: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Noise-free HU, blood code (0..5) and a mimic flag on a grid."""
        F = Fields(self, g)
        hu = np.full(g.shape, -1000.0, F32)
        d, db = F.depth, F.db
        if self.vendor.headrest:  # plastic head holder under the occiput
            post = F.uy / (F.r + 1e-3)
            np.copyto(hu, F32(90.0), where=(d < -4) & (d > -7.5) & (post > 0.55))
            np.copyto(hu, F32(-880.0), where=(d < 0) & (d >= -4) & (post > 0.55))
        # scalp with a thin fat layer
        np.copyto(hu, F32(self.scalp_hu), where=(d >= 0) & (d < F.s))
        np.copyto(hu, F32(-75.0), where=(d > 1.2) & (d < 1.2 + self.fat_w))
        # skull: dense tables, diploë
        uu = (d - F.s) / F.k
        bone = (uu >= 0) & (db < 0)
        table = (uu < self.table_frac) | (uu > 1 - self.table_frac)
        diploe = F32(self.diploe_hu) + F32(90.0) * F.tex
        np.copyto(hu, np.where(table, F32(self.table_hu), diploe), where=bone)
        # intracranial: white, grey, CSF
        cav = F.cavity
        tex = F.tex * F32(self.tex_amp)
        brain = np.where(F.grey, F32(self.grey_hu), F32(self.white_hu)) + tex
        np.copyto(hu, brain, where=cav)
        self._deep(F, hu)
        np.copyto(hu, F32(self.csf_hu) + tex * F32(0.3), where=F.csf_all)
        # falx (dense line in the fissure) and dural sinuses
        np.copyto(hu, F32(self.falx_hu), where=F.fissure_region & (np.abs(F.ux) < 0.5) & cav)
        zlo, zhi = F.uz_range
        near = db < 6  # the sinuses lie against the inner table
        sss = cav & near & (np.abs(F.ux) < F32(2.6) * (1 - db / 6)) & (F.uz > -5) & (F.uy > -40)
        mimic = sss
        if zlo < self.ts_z + 4 and zhi > self.ts_z - 4:
            ts = cav & (db < 4.5) & (np.abs(F.uz - F32(self.ts_z)) < 3.5) & (F.uy > 45) \
                & (np.abs(F.ux) > 4)
            np.copyto(hu, F32(self.ts_hu), where=ts)
            mimic = sss | ts
        np.copyto(hu, F32(self.sss_hu), where=sss)
        # skull base: floors, petrous ridges, air cells, orbits
        if F.floor is not None:
            hu = self._skull_base(F, hu)
        # cupping: a faint brighter rim under the inner table (beam hardening)
        if self.cup > 0.5:
            rim = np.clip(1 - db / F32(8.0), 0, 1)
            np.copyto(hu, hu + F32(self.cup) * rim * rim, where=cav & near)
        if self.bh and zlo < -14:  # dark band between the petrous bones
            band = np.exp(-((F.uy - F32(12.0)) / F32(4.0)) ** 2) \
                * np.exp(-((F.uz + F32(22.0)) / F32(6.0)) ** 2) * (np.abs(F.ux) < 45)
            np.copyto(hu, hu - F32(self.bh) * band, where=cav)
        # calcifications
        for _, c, r, v in self.calcs:
            sl = self.box(g, c, float(r.max()) + 1)
            if sl is None:
                continue
            q = _ellipsoid_q((F.ux[sl], F.uy[sl], F.uz[sl]), c, r)
            hu[sl] = np.where(q < 1, F32(v), hu[sl])
            mimic[sl] |= q < 1
        # hemorrhage
        code = np.zeros(g.shape, np.uint8)
        for f in self.foci:
            sl = self.box(g, f.centre, f.radius)
            if sl is None:
                continue
            Fs = F.view(sl)
            v = f.field(Fs)
            m = v < f.p["level"]
            m &= code[sl] == 0
            val = F32(f.hu) + Fs.tex * F32(3.0)
            if f.kind == "EDH" and f.p.get("swirl"):
                val = np.where(Fs.tex > 0.9, val - F32(22.0), val)
            if f.kind == "SAH":  # thin layers in sulci: diluted
                val = val - F32(6.0) * np.clip(Fs.db / 20, 0, 1)
            if f.kind == "IPH" and f.rim:
                rim = (v >= f.p["level"]) & (v < f.p["level"] * f.p["rim_w"]) & ~m
                hu[sl] = np.where(rim, hu[sl] - F32(f.rim), hu[sl])
            hu[sl] = np.where(m, val, hu[sl])
            code[sl] = np.where(m, np.uint8(CODE[f.kind]), code[sl])
        return hu, code, mimic

    def _deep(self, F: Fields, hu: np.ndarray) -> None:
        """Deep grey nuclei and brainstem/cerebellum (ventricles and cisterns are CSF)."""
        for c, r in self.nuclei():
            sl = self.box(F.g, c, float(r.max()) + 1)
            if sl is None:
                continue
            q = _ellipsoid_q((F.ux[sl], F.uy[sl], F.uz[sl]), c, r)
            hu[sl] = np.where((q < 1) & F.cavity[sl], F32(self.nuclei_hu) + F.tex[sl],
                              hu[sl])

    def nuclei(self) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for side in (-1, 1):
            out.append((np.array([side * 10.0, 6.0, 4.0]), np.array([8.0, 13.0, 9.0])))
            out.append((np.array([side * 20.0, -8.0, 2.0]), np.array([6.0, 14.0, 10.0])))
            out.append((np.array([side * 12.0, -20.0, 10.0]), np.array([4.5, 9.0, 8.0])))
        return out

    def ventricles(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(id, centre, radii): 1/2 = right/left lateral, 3 = third, 4 = fourth."""
        out = []
        for i, side in enumerate((-1, 1)):
            s = self.vent_scale[i]
            x = self.vent_shift
            out += [
                (1 + i, np.array([x + side * (2 + 4 * s), -24.0, 12.0]),
                 np.array([5.0 * s, 10.0, 8.0 * s])),  # frontal horn
                (1 + i, np.array([x + side * (3 + 4 * s), -2.0, 18.0]),
                 np.array([4.5 * s, 22.0, 5.0 * s])),  # body
                (1 + i, np.array([x + side * (12 + 3 * s), 20.0, 10.0]),
                 np.array([6.5 * s, 10.0, 8.0 * s])),  # atrium
                (1 + i, np.array([x + side * (15 + 2 * s), 33.0, 6.0]),
                 np.array([3.0 * s, 9.0, 3.5 * s])),  # occipital horn
                (1 + i, np.array([x + side * 26.0, -4.0, -12.0]),
                 np.array([2.5 * s, 12.0, 3.0 * s])),  # temporal horn
            ]
        s = 0.5 * sum(self.vent_scale)
        out.append((3, np.array([self.vent_shift, 2.0, 2.0]), np.array([1.6 * s, 12.0, 9.0])))
        out.append((4, np.array([0.0, 30.0, -30.0]), np.array([6.0 * s, 3.5 * s, 6.0])))
        return out

    def _skull_base(self, F: Fields, hu: np.ndarray) -> np.ndarray:
        """What lies under the cranial floors: orbital roofs over fat and globes, ethmoid and
        sphenoid air cells, the petrous bone with mastoid cells, the greater sphenoid wings."""
        below = (F.uz < F.floor) & (F.db >= 0)
        if not below.any():
            return hu
        h = F.floor - F.uz
        x, y, z = np.abs(F.ux), F.uy, F.uz
        cells = self.waves(self.cells, F.g)
        base = F32(820.0) + F32(160.0) * F.tex  # petrous and sphenoid bone
        ant = y < F.sphenoid_ridge
        # anterior: orbits (fat, the globe in front) lateral, ethmoid air cells medial
        zo = F32(self.floor_ant - 17)
        orbit = ((x - 30) / 16) ** 2 + ((y + 60) / 24) ** 2 + ((z - zo) / 15) ** 2 < 1
        base = np.where(ant & orbit, F32(-80.0), base)
        globe = ((x - 31) / 12) ** 2 + ((y + 76) / 12) ** 2 + ((z - zo - 2) / 12) ** 2 < 1
        base = np.where(ant & globe, F32(15.0), base)
        ethmoid = ant & ((x / 12) ** 2 + ((y + 58) / 30) ** 2 < 1)
        base = np.where(ethmoid, np.where(cells > 0.2, F32(-900.0), F32(250.0)), base)
        # mastoid air cells, lateral and behind the petrous ridge
        mastoid = (x > 36) & (y > 8) & (cells > 0.5)
        base = np.where(mastoid, F32(-900.0), base)
        # sphenoid sinus under the sella
        sph = ((F.ux / 13) ** 2 + ((y + 16) / 11) ** 2 + ((z - self.sella_z + 16) / 11) ** 2) < 1
        base = np.where(sph, F32(-950.0), base)
        base = np.where(h < 1.8, F32(self.table_hu), base)  # cortical floor plate
        return np.where(below, base, hu)


# ----------------------------------------------------------------------------- fields
class Fields:
    """Lazily computed per-voxel fields of a phantom on one grid."""

    def __init__(self, ph: Phantom, g: Grid, *, voxel: float = 0.0,
                 parent: tuple[Fields, tuple[slice, slice, slice]] | None = None) -> None:
        self.ph, self.g, self.voxel = ph, g, voxel
        self.shape = g.shape
        self.sy = g.y.astype(F32)
        self._parent = parent
        if parent is None:
            self.ux, self.uy, self.uz = ph.head_coords(g)
        else:
            P, sl = parent
            self.ux, self.uy, self.uz = P.ux[sl], P.uy[sl], P.uz[sl]

    def view(self, sl: tuple[slice, slice, slice]) -> Fields:
        """The fields of a sub-box, sharing what the parent already computed."""
        sub = Fields(self.ph, self.g.sub(sl), parent=(self, sl))
        for name in ("r", "depth", "tex", "floor", "sulc_field", "db", "cavity"):
            if name in self.__dict__:
                val = self.__dict__[name]
                sub.__dict__[name] = val[sl] if isinstance(val, np.ndarray) else val
        return sub

    @cached_property
    def uz_range(self) -> tuple[float, float]:
        """Exact range of head z over the grid (linear in the corners)."""
        g, R = self.g, self.ph.R
        corners = np.array(np.meshgrid(g.x[[0, -1]], g.y[[0, -1]], g.z[[0, -1]])).reshape(3, -1)
        uz = R[2] @ (corners - self.ph.c0[:, None])
        return float(uz.min()), float(uz.max())

    @cached_property
    def r(self) -> np.ndarray:
        return np.sqrt(self.ux * self.ux + self.uy * self.uy + self.uz * self.uz)

    @cached_property
    def depth(self) -> np.ndarray:
        """Depth below the outer surface along the ray from the origin (mm, < 0 outside)."""
        ph = self.ph
        ax = F32(ph.A) * (1 - F32(ph.egg) * np.clip(-self.uy / F32(ph.B), 0, 1))
        cz = np.where(self.uz > 0, F32(ph.C), F32(ph.C_low))
        rho = np.sqrt((self.ux / ax) ** 2 + (self.uy / F32(ph.B)) ** 2 + (self.uz / cz) ** 2)
        return self.r * (1 / (rho + F32(1e-6)) - 1)

    @cached_property
    def _sk(self) -> tuple[np.ndarray, np.ndarray]:
        """Scalp (with temporal muscle) and skull thickness along the ray (mm)."""
        ph = self.ph
        inv = 1 / (self.r + F32(1e-3))
        lat = (self.ux * inv) ** 2
        # the temporal muscle fades out smoothly upwards (a step would put a ledge of bone on the
        # inner table: an extra-axial mimic no head has)
        temporal = np.clip((F32(0.45) - self.uz * inv) / F32(0.3), 0, 1)
        s = F32(ph.scalp) + F32(ph.temporalis) * lat * lat * temporal
        k = F32(ph.k0) - F32(0.3 * ph.k0) * lat + F32(ph.k_front) * (self.uy * inv) ** 2
        return s, k

    @property
    def s(self) -> np.ndarray:
        return self._sk[0]

    @property
    def k(self) -> np.ndarray:
        return self._sk[1]

    @cached_property
    def db(self) -> np.ndarray:
        """Depth below the inner table (mm, > 0 in the cranial cavity)."""
        return self.depth - self.s - self.k

    @cached_property
    def floor(self) -> np.ndarray | None:
        """Height of the skull-base floor under (x, y) (None where the grid is above it)."""
        ph = self.ph
        if self.uz_range[0] > max(ph.floor_ant, ph.petrous_top, ph.sella_z) + 1:
            return None
        x, y = np.abs(self.ux), self.uy
        # anterior fossa, in front of the sphenoid ridge (which runs forward laterally): domed
        # orbital roofs, a lower olfactory groove in the midline, rising towards the front
        ridge = self.sphenoid_ridge
        ant = (F32(ph.floor_ant) + F32(4.0) * np.exp(-((x - 28) / 11) ** 2)
               - F32(5.0) * np.exp(-((x / 7) ** 2)) + F32(0.12) * np.clip(-y - 40, 0, None))
        fl = np.where(y < ridge, ant, F32(-90.0))
        # middle fossa (temporal lobes) beside the sphenoid body, before the petrous ridge
        mid = (y >= ridge) & (y < 10) & (x > 12)
        fl = np.where(mid, np.maximum(fl, F32(ph.floor_mid)), fl)
        # sphenoid body with the sella turcica (a bowl); the clivus slopes down behind it
        body = (x <= 12) & (y >= ridge)
        sella = F32(ph.sella_z + 2) - F32(6.0) * np.exp(-((x / 7) ** 2) - ((y + 12) / 5) ** 2)
        clivus = F32(ph.sella_z + 2) - F32(1.8) * np.clip(y + 4, 0, None)
        fl = np.where(body, np.maximum(fl, np.where(y < -4, sella, clivus)), fl)
        # petrous ridge: from (58, 22) to (14, -4), crest at petrous_top, slope 1 mm/mm
        a = np.array([58.0, 22.0])
        b = np.array([14.0, -4.0])
        ab = b - a
        t = np.clip(((x - F32(a[0])) * F32(ab[0]) + (y - F32(a[1])) * F32(ab[1]))
                    / F32(ab @ ab), 0, 1)
        dist = np.sqrt((x - F32(a[0]) - t * F32(ab[0])) ** 2
                       + (y - F32(a[1]) - t * F32(ab[1])) ** 2)
        return np.maximum(fl, F32(ph.petrous_top) - F32(1.1) * dist)

    @cached_property
    def sphenoid_ridge(self) -> np.ndarray:
        """y of the lesser sphenoid wing under x: the anterior / middle fossa border."""
        return F32(-24.0) - F32(0.22) * np.abs(self.ux)

    @cached_property
    def above_floor(self) -> np.ndarray:
        fl = self.floor
        return np.ones(self.shape, bool) if fl is None else self.uz >= fl

    @cached_property
    def cavity(self) -> np.ndarray:
        return (self.db >= 0) & self.above_floor

    @cached_property
    def tex(self) -> np.ndarray:
        return self.ph.waves(self.ph.texw, self.g)

    @cached_property
    def sulc_field(self) -> np.ndarray:
        return np.abs(self.ph.waves(self.ph.sulc, self.g))

    @cached_property
    def _sulc_taper(self) -> np.ndarray:
        return np.clip(1 - self.db / F32(self.ph.sulc_depth), 0, 1)

    @cached_property
    def grey(self) -> np.ndarray:
        ph, t = self.ph, self._sulc_taper
        g = (self.db < F32(ph.csf_w + ph.grey_w)) | \
            (self.sulc_field < F32(ph.sulc_w) * t + F32(ph.gyral_w) * (t > 0))
        g |= self.fissure_region & (np.abs(self.ux) < F32(ph.falx_w + ph.grey_w))
        return g

    @cached_property
    def fissure_region(self) -> np.ndarray:
        """Where the interhemispheric fissure runs: above the corpus callosum or in front of /
        behind it."""
        return (self.uz > 24) | (np.abs(self.uy + 3) > 38 - np.clip(self.uz, -20, 24))

    @cached_property
    def csf_ext(self) -> np.ndarray:
        """Extraventricular CSF: convexity, sulci, fissures and basal cisterns."""
        ph = self.ph
        t = self._sulc_taper
        m = (self.db < F32(ph.csf_w)) | (self.sulc_field < F32(ph.sulc_w) * t)
        m |= self.fissure_region & (np.abs(self.ux) < F32(ph.falx_w)) & (np.abs(self.ux) >= 0.5)
        for side in (-1, 1):  # Sylvian fissures: oblique sheets from the lateral surface inwards
            sl = ph.box(self.g, np.array([side * 45.0, -14.0, -5.0]), 30.0)
            if sl is None:
                continue
            ux, uy, uz = self.ux[sl], self.uy[sl], self.uz[sl]
            x = side * ux
            ys = F32(-6.0) - F32(0.35) * (x - 22) + F32(2.5) * self.tex[sl]
            m[sl] |= (np.abs(uy - ys) < F32(ph.sylvian_w)) & (x > 28) & (uz > -18) & (uz < 8)
        # perimesencephalic cistern (ring around the brainstem) and suprasellar cistern
        sl = ph.box(self.g, np.array([0.0, 0.0, -15.0]), 30.0)
        if sl is not None:
            ux, uy, uz = self.ux[sl], self.uy[sl], self.uz[sl]
            q = (ux / 12) ** 2 + ((uy - 8) / 11) ** 2
            w = F32(ph.cistern_w / 11) * (1 + F32(0.4) * self.tex[sl]) \
                * (1 + F32(0.8) * np.clip(uy - 8, 0, 12) / 12)  # wider behind (quadrigeminal)
            ring = (q > 1) & (q < (1 + w) ** 2) & (uz < -4) & (uz > -26) & (uy > -2)
            supra = ((ux / 11) ** 2 + ((uy + 12) / 7) ** 2 + ((uz + 14) / 4) ** 2) < 1
            m[sl] |= ring | supra
        return m & self.cavity & (self.ventricle_ids == 0)

    @cached_property
    def ventricle_ids(self) -> np.ndarray:
        out = np.zeros(self.shape, np.uint8)
        for vid, c, r in self.ph.ventricles():
            sl = self.ph.box(self.g, c, float(r.max()) + 1)
            if sl is None:
                continue
            q = _ellipsoid_q((self.ux[sl], self.uy[sl], self.uz[sl]), c, r)
            inside = q < 1
            if vid in (1, 2):  # the septum pellucidum splits the two lateral ventricles
                inside &= np.abs(self.ux[sl] - F32(self.ph.vent_shift)) > 0.9
            out[sl] = np.where(inside & (out[sl] == 0), np.uint8(vid), out[sl])
        return out

    @cached_property
    def csf_all(self) -> np.ndarray:
        return self.csf_ext | ((self.ventricle_ids > 0) & self.cavity)

    @cached_property
    def parenchyma(self) -> np.ndarray:
        return self.cavity & ~self.csf_all


# ----------------------------------------------------------------------------- volume
def _binomial(a: np.ndarray, passes: int) -> np.ndarray:
    """[1 2 1]/4 smoothing along the two in-plane axes, ``passes`` times (edges replicated)."""
    for _ in range(passes):
        for ax in (1, 2):
            out = a * F32(0.5)
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[ax], hi[ax] = slice(1, None), slice(None, -1)
            out[tuple(lo)] += F32(0.25) * a[tuple(hi)]
            out[tuple(hi)] += F32(0.25) * a[tuple(lo)]
            e0 = [slice(None)] * 3
            e1 = [slice(None)] * 3
            e0[ax], e1[ax] = 0, -1
            out[tuple(e0)] += F32(0.25) * a[tuple(e0)]
            out[tuple(e1)] += F32(0.25) * a[tuple(e1)]
            a = out
    return a


@dataclass(slots=True)
class RenderedStudy:
    hu: np.ndarray  #: (z, y, x) HU with noise, ascending z
    clean: np.ndarray  #: noise-free, before the kernel
    label: np.ndarray  #: uint8 code of blood (>= half the slab)
    mimic: np.ndarray  #: bool, a mimic (calcification, sinus) covers >= half the slab
    grid: Grid
    inside: np.ndarray  #: in-plane reconstruction circle (y, x)


def _noise_gain(passes: int) -> float:
    """SD of white noise after ``passes`` 2D binomial passes (to renormalise it)."""
    k = np.array([1.0])
    for _ in range(passes):
        k = np.convolve(k, [0.25, 0.5, 0.25])
    return float((k ** 2).sum())  # 2D: (sum k^2)^2 variance, so this is the SD


def render_study(ph: Phantom, rng: np.random.Generator, *, chunk: int = 6) -> RenderedStudy:
    """Slab-averaged render, reconstruction-kernel blur, correlated noise; a few slices at a
    time so the working arrays stay in cache."""
    n, t = ph.n_slices, ph.thickness
    m = ph.matrix
    v = ph.vendor
    axis = (np.arange(m) - (m - 1) / 2) * ph.spacing
    n_sub = max(1, math.ceil(t / 2.5))
    offs = (np.arange(n_sub) + 0.5) / n_sub * t - t / 2
    zs = (ph.scan_z[:, None] + offs[None, :]).ravel()
    clean = np.full((n, m, m), -1000.0, F32)
    img = np.full((n, m, m), -1000.0, F32)
    label = np.zeros((n, m, m), np.uint8)
    mimic = np.zeros((n, m, m), bool)
    # only the head's bounding box (plus the head holder) is rendered; the rest is air
    ext = np.sqrt((ph.R.T ** 2) @ np.array([ph.A, ph.B, ph.C_low]) ** 2) + 14
    xs = slice(*np.searchsorted(axis, [ph.c0[0] - ext[0], ph.c0[0] + ext[0]]))
    ys = slice(*np.searchsorted(axis, [ph.c0[1] - ext[1], ph.c0[1] + ext[1]]))
    # more noise low in the head (the skull base absorbs more)
    zrel = (ph.scan_z - ph.scan_z[0]) / max(ph.scan_z[-1] - ph.scan_z[0], 1)
    sd = (ph.noise_sd * (1 + 0.35 * np.exp(-zrel / 0.2))).astype(F32)
    gain = F32(1.0 / _noise_gain(v.noise_blur))
    per = max(1, chunk // n_sub)
    half = (n_sub + 1) // 2  # a voxel is blood / mimic when at least half its slab is
    for s0 in range(0, n, per):
        s1 = min(n, s0 + per)
        k = s1 - s0
        g = Grid(axis[xs], axis[ys], zs[s0 * n_sub:s1 * n_sub])
        hu, code, mim = ph.render(g)
        h, w = hu.shape[1:]
        slab = hu.reshape(k, n_sub, h, w).mean(axis=1)
        clean[s0:s1, ys, xs] = slab
        codes = code.reshape(k, n_sub, h, w)
        # blood when at least half the slab is, and bone does not dominate the voxel
        blood = ((codes > 0).sum(axis=1, dtype=np.uint8) >= half) & (slab < 150)
        label[s0:s1, ys, xs] = np.where(blood, codes.max(axis=1), np.uint8(0))
        mimic[s0:s1, ys, xs] = mim.reshape(k, n_sub, h, w).sum(axis=1, dtype=np.uint8) >= half
        img[s0:s1, ys, xs] = _binomial(slab, v.blur)  # outside the box: uniform air
        noise = rng.standard_normal((k, m, m), dtype=F32)
        if v.noise_blur:
            noise = _binomial(noise, v.noise_blur)
        noise *= (sd[s0:s1] * gain)[:, None, None]
        img[s0:s1] += noise
    img += F32(v.hu_offset)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    inside = (yy ** 2 + xx ** 2) <= (ph.fov / 2) ** 2
    return RenderedStudy(img, clean, label, mimic, Grid(axis, axis, ph.scan_z.copy()), inside)


# ----------------------------------------------------------------------------- DICOM
def _ds(v: float) -> str:
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    return s if s not in ("-0", "") else "0"


@dataclass(slots=True)
class StudyRecord:
    study_uid: str
    series_uid: str
    site: str
    ich: int
    subtypes: list[str]
    volume_ml: float
    files: int
    mimics: list[str] = field(default_factory=list)
    thickness: float = 0.0
    matrix: int = 0
    noise_sd: float = 0.0


def write_study(root: Path, index: int, ph: Phantom, r: RenderedStudy,
                rng: np.random.Generator, seed: int = 0) -> StudyRecord:
    v = ph.vendor

    def uid(tag: str) -> str:  # reproducible: the same seed writes the same UIDs
        return generate_uid(entropy_srcs=[f"bloodnet-holdout:{seed}:{index}:{tag}"])

    study_uid, series_uid, for_uid = uid("study"), uid("series"), uid("frame")
    lo, hi = v.stored_range()
    stored = np.rint((r.hu - F32(v.intercept)) / F32(v.slope))
    stored = np.clip(stored, lo, hi)
    if v.padding is not None:
        stored = np.where(r.inside[None], stored, v.padding)
    else:  # outside the circle: the lowest value (air-ish after the rescale)
        out_val = max(lo, round((-1024.0 - v.intercept) / v.slope))
        stored = np.where(r.inside[None], stored, out_val)
    stored = stored.astype(np.int16 if v.signed else np.uint16)
    n, m = stored.shape[0], stored.shape[1]
    acc = f"HX{rng.integers(10 ** 7, 10 ** 8)}"
    pid = f"HOLDOUT{index:05d}"
    date = f"2024{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
    tm = f"{rng.integers(0, 24):02d}{rng.integers(0, 60):02d}{rng.integers(0, 60):02d}"
    age = int(rng.integers(18, 95))
    if v.naming == "uid":
        folder = root / v.site / study_uid / series_uid
    else:
        folder = root / v.site / acc / "SE0002"
    folder.mkdir(parents=True, exist_ok=True)
    order = np.arange(n)[::-1] if v.descending else np.arange(n)
    x0 = float(r.grid.x[0])
    y0 = float(r.grid.y[0])
    for inst, k in enumerate(order, start=1):
        sop = uid(f"sop{inst}")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = tm
        ds.AccessionNumber = acc
        ds.Modality = "CT"
        ds.Manufacturer = v.manufacturer
        ds.InstitutionName = v.site
        ds.ReferringPhysicianName = ""
        ds.StationName = f"{v.site[8:].upper()}CT1"
        ds.StudyDescription = "CT HEAD WITHOUT CONTRAST"
        ds.SeriesDescription = f"Head {ph.thickness:g}mm {v.kernel}"
        ds.ManufacturerModelName = v.model
        ds.PatientName = f"Holdout^{index:05d}"
        ds.PatientID = pid
        ds.PatientBirthDate = f"{2024 - age}0101"
        ds.PatientSex = str(rng.choice(["F", "M"]))
        ds.PatientAge = f"{age:03d}Y"
        ds.BodyPartExamined = "HEAD"
        ds.SliceThickness = _ds(ph.thickness)
        ds.SpacingBetweenSlices = _ds(ph.thickness)
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = _ds(ph.spacing * m)
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "120"
        ds.ConvolutionKernel = v.kernel
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = acc[-6:]
        ds.SeriesNumber = 2
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = inst
        z = float(r.grid.z[k])
        ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(z)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(z)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = m
        ds.PixelSpacing = [_ds(ph.spacing), _ds(ph.spacing)]
        ds.BitsAllocated = 16
        ds.BitsStored = v.bits_stored
        ds.HighBit = v.bits_stored - 1
        ds.PixelRepresentation = 1 if v.signed else 0
        if v.padding is not None:
            ds.add_new(0x00280120, "SS" if v.signed else "US", v.padding)
        ds.WindowCenter = "40"
        ds.WindowWidth = "80"
        ds.RescaleIntercept = _ds(v.intercept)
        ds.RescaleSlope = _ds(v.slope)
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        name = f"{sop}.dcm" if v.naming == "uid" else f"IM{inst:05d}"
        ds.save_as(folder / name, enforce_file_format=True)
    subs = sorted({f.kind for f in ph.foci}, key=SUBTYPES.index)
    vol = float(sum(f.volume_ml for f in ph.foci))
    return StudyRecord(study_uid, series_uid, v.site, int(bool(ph.foci)), subs, vol, n,
                       ph.mimics, ph.thickness, ph.matrix, round(ph.noise_sd, 2))


# ----------------------------------------------------------------------------- data set
def make_study(index: int, seed: int, positive: bool, vendor: Vendor, matrix: int
               ) -> tuple[Phantom, RenderedStudy]:
    rng = np.random.default_rng([seed, index])
    ph = Phantom(rng, positive=positive, vendor=vendor, matrix=matrix)
    return ph, render_study(ph, rng)


def _one(args: tuple) -> tuple[StudyRecord, float]:
    root, index, seed, positive, vendor, matrix = args
    t = time.perf_counter()
    ph, r = make_study(index, seed, positive, vendor, matrix)
    rec = write_study(root, index, ph, r, np.random.default_rng([seed, index, 1]), seed)
    (root / "masks").mkdir(exist_ok=True)
    np.savez_compressed(root / "masks" / f"{rec.study_uid}.npz", label=r.label,
                        z=r.grid.z.astype(np.float32))
    return rec, time.perf_counter() - t


def plan(studies: int, seed: int, sites: int, positive_rate: float
         ) -> list[tuple[bool, Vendor]]:
    """Sites round-robin; round(N·rate) positives spread evenly over the sites (the remainder to
    seeded sites), in a seeded order within each site, so per-site AUCs compare like with like."""
    rng = np.random.default_rng([seed, 10 ** 6])
    vendors = VENDORS[:max(1, min(sites, len(VENDORS)))]
    site_of = np.arange(studies) % len(vendors)
    sizes = np.bincount(site_of, minlength=len(vendors))
    npos = np.floor(sizes * positive_rate).astype(int)
    extra = round(studies * positive_rate) - int(npos.sum())
    for j in rng.permutation(len(vendors)):
        if extra > 0 and npos[j] < sizes[j]:
            npos[j] += 1
            extra -= 1
    pos = np.zeros(studies, bool)
    for j in range(len(vendors)):
        flags = np.arange(sizes[j]) < npos[j]
        rng.shuffle(flags)
        pos[site_of == j] = flags
    return [(bool(pos[i]), vendors[site_of[i]]) for i in range(studies)]


def generate(out: Path, *, studies: int, seed: int, matrix: int = 512, sites: int = 4,
             positive_rate: float = 0.5, workers: int = 1, progress: bool = True
             ) -> list[StudyRecord]:
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out, i, seed, p, v, matrix)
            for i, (p, v) in enumerate(plan(studies, seed, sites, positive_rate))]
    records: list[StudyRecord] = []
    t0 = time.perf_counter()
    if workers > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(workers) as pool:
            results = pool.imap(_one, jobs)
            for i, (rec, _) in enumerate(results, 1):
                records.append(rec)
                if progress:
                    _progress(i, studies, t0)
    else:
        for i, job in enumerate(jobs, 1):
            records.append(_one(job)[0])
            if progress:
                _progress(i, studies, t0)
    with (out / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_uid", "site", "ich", "subtypes", "volume_ml", "series_uid"])
        for r in records:
            w.writerow([r.study_uid, r.site, r.ich, ";".join(r.subtypes),
                        f"{r.volume_ml:.3f}", r.series_uid])
    # what labels.csv does not carry: mimics and acquisition, for the benchmark's breakdowns
    with (out / "extras.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_uid", "mimics", "thickness_mm", "matrix", "noise_sd"])
        for r in records:
            w.writerow([r.study_uid, ";".join(r.mimics), r.thickness, r.matrix, r.noise_sd])
    return records


def _progress(i: int, n: int, t0: float) -> None:
    dt = time.perf_counter() - t0
    print(f"\r{i}/{n} studies  {dt:.1f}s  ({dt / i:.2f} s/study)", end="" if i < n else "\n",
          file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- contact sheet
def _png(path: Path, img: np.ndarray) -> None:
    """A greyscale or RGB uint8 PNG with zlib only."""
    h, w = img.shape[:2]
    color = 2 if img.ndim == 3 else 0
    raw = b"".join(b"\x00" + img[i].tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(
            ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def contact_sheet(root: Path, path: Path, *, n: int = 8) -> None:
    """A PNG of written positive studies (read back from the DICOM files, brain window 40/80):
    per study the slice with the most blood, plain and with the mask outlined in red."""
    with (root / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["ich"] == "1"]
    rows.sort(key=lambda r: float(r["volume_ml"]))
    pick = [rows[i] for i in np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(int)]
    files: dict[str, list[Path]] = {}
    for p in root.rglob("*"):
        if p.is_file() and p.suffix not in (".csv", ".npz", ".png"):
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            files.setdefault(ds.SeriesInstanceUID, []).append(p)
    tiles = []
    for r in pick:
        label = np.load(root / "masks" / f"{r['study_uid']}.npz")["label"]
        k = int(np.argmax((label > 0).sum(axis=(1, 2))))
        dss = sorted((pydicom.dcmread(p) for p in files[r["series_uid"]]),
                     key=lambda d: float(d.ImagePositionPatient[2]))
        ds = dss[k]
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        g = _resize(np.clip(hu / 80 * 255, 0, 255).astype(np.uint8), 320)
        rgb = np.repeat(g[:, :, None], 3, axis=2)
        lab = _resize((label[k] > 0).astype(np.uint8), 320) > 0
        marked = rgb.copy()
        marked[lab & ~_erode(lab)] = (255, 40, 40)
        tiles.append(np.concatenate([rgb, marked], axis=1))
    if len(tiles) % 2:
        tiles.append(np.zeros_like(tiles[0]))
    rows_img = [np.concatenate(tiles[j:j + 2], axis=1) for j in range(0, len(tiles), 2)]
    _png(path, np.ascontiguousarray(np.concatenate(rows_img, axis=0)))


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    idx = (np.arange(size) * a.shape[0] / size).astype(int)
    return a[idx][:, idx]


def _erode(m: np.ndarray) -> np.ndarray:
    e = m.copy()
    e[1:] &= m[:-1]
    e[:-1] &= m[1:]
    e[:, 1:] &= m[:, :-1]
    e[:, :-1] &= m[:, 1:]
    return e


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--studies", type=int, default=100)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--matrix", type=int, default=512)
    ap.add_argument("--sites", type=int, default=4, choices=(1, 2, 3, 4))
    ap.add_argument("--positive-rate", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--sheet", type=Path, help="also write a PNG contact sheet of bleeds")
    a = ap.parse_args(argv)
    if a.studies > 0:  # --studies 0 --sheet PNG: only the sheet of an existing folder
        t = time.perf_counter()
        recs = generate(a.out, studies=a.studies, seed=a.seed, matrix=a.matrix, sites=a.sites,
                        positive_rate=a.positive_rate, workers=a.workers)
        dt = time.perf_counter() - t
        print(f"wrote {len(recs)} studies ({sum(r.ich for r in recs)} ICH) to {a.out} in "
              f"{dt:.1f} s ({dt / len(recs):.2f} s/study)", file=sys.stderr)
    if a.sheet:
        contact_sheet(a.out, a.sheet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
