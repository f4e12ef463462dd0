#!/usr/bin/env python3
"""Radiology phantom: independent synthetic non-contrast head CT with hemorrhage ground truth.

What it is
    A generator of axial head CT studies (DICOM CT Image Storage, one file per slice) with a
    voxel mask of intracranial hemorrhage, meant to evaluate an ICH model honestly. It was written
    from a plain radiology description and the DICOM standard only, without reading the project's
    other generators (``bloodnet_ops/synth``, ``bench/holdout_phantom.py``) or its model, so that
    its appearance is not tuned to what the model already saw. numpy, scipy and pydicom only.

Anatomy (approximate HU; every value and size is drawn per study)
    Built as approximate signed-distance fields in a head frame (x left, y posterior, z up, mm),
    rotated (yaw <=15 deg, roll/pitch <=10 deg) and shifted in the field; children (5-12 y) are
    0.80-0.90 of adult size, with thinner skulls, small ventricles and no frontal sinus.
    air -1000; fat -100..-65; CSF 2..12; white matter 22..30; grey matter +6..12 (<=45);
    caudate / lentiform / thalamus close to cortex; scalp, temporalis, face muscle 35..55;
    skull 4-10 mm with cortical tables 1100..1900 and diploe 350..750, sutures as lucent lines;
    sulci (1-4 mm, wider with atrophy), Sylvian and interhemispheric fissures, CSF rim;
    falx (35..55, dense 60..80, calcified plaques 150..800), tentorium; venous sinuses 40..60
    (dense 62..74): superior sagittal, straight, torcula, transverse, sigmoid;
    lateral (frontal, body, atrium, occipital, temporal horns), third and fourth ventricles;
    pineal (calcified 100..600 in ~40 % of adults), choroid plexus (calcified ~40 %),
    globus pallidus calcification; suprasellar, ambient, quadrigeminal, prepontine cisterns,
    cisterna magna; midbrain, pons, medulla, cerebellum with folia; skull base: orbits with
    globes (vitreous 5..15, lens 80..115), optic nerves, recti, orbital fat, thin orbital roofs,
    ethmoid and mastoid air cells, sphenoid / frontal / maxillary sinuses, petrous bones
    (1300..2100), clivus, foramen magnum, nasal cavity, zygomatic arches, ears, head holder.
Hemorrhage (positives, 1-3 foci, total volume log-uniform 0.2-80 mL)
    EDH biconvex lens stopped at sutures (50..85, often with fracture and scalp swelling);
    SDH convexity crescent / interhemispheric / tentorial: acute 55..80, hyperacute 38..52,
    isodense 30..45, chronic 5..25, acute-on-chronic with a fluid level; SAH in convexity sulci,
    Sylvian fissure or basal cisterns (50..75 before partial volume with CSF); IPH multi-lobed
    (basal ganglia, thalamus, lobar, cerebellum) 55..88 with oedema rim, or patchy contusions at
    the frontal base / temporal pole; IVH layering in the occipital horns (level along gravity,
    patient posterior) or casting a ventricle. The mask marks voxels that are >= half blood
    (sub-slice averaging along z, analytic anti-aliasing in plane); codes 1 EDH 2 SDH 3 SAH
    4 IPH 5 IVH.
Scanner physics
    slab partial volume (sub-slices <= 1.25 mm), in-plane blur 0.4-0.8 mm, correlated noise
    with a ramp-times-apodisation power spectrum (grain from the kernel), sd 3-10 HU rising for
    thin slices, cupping, beam-hardening band and streaks between the petrous bones, occasional
    ring and motion ghosting, reconstruction circle with vendor padding.
Vendor profiles (``--sites K`` uses the first K)
    ANSELM    GE-like, signed 16 bit, intercept -1024, padding -2000 stored, descending order
    RIVERSIDE Siemens-like, unsigned 12 bit, intercept -1024, padding 0 stored, localizer
    KESTREL   Philips-like, unsigned 12 bit, intercept -1000, no padding tag, thin slices
    ORRIN     Toshiba-like, signed 12 bit, intercept 0, padding -2000, implicit VR, no extension
    LOWMOOR   UIH-like, signed 16 bit, slope 0.5, intercept -1024, padding -3024 stored
Usage
    python bench/radiology_phantom.py --out DIR --studies N --seed S [--matrix 256|512]
        [--sites K] [--positive-rate P] [--workers W] [--sheet PNG]
    Writes DIR/<site>/... DICOM, DIR/labels.csv, DIR/extras.csv, DIR/masks/<study_uid>.npz.
    Studies depend only on (seed, index). ``render_study`` returns one study in memory.
Cost (one core)
    256^2: about 1.3-1.6 s per thick-slice study, about 2.1 s for 1 mm (~145 slices);
    mean about 1.9 s over the vendor mix. 512^2: about 5 s (thick) to 15 s (0.625 mm).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import multiprocessing as mp
import struct
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from scipy import ndimage

F32 = np.float32
SUBTYPES = ("EDH", "SDH", "SAH", "IPH", "IVH")
CODE = {n: i + 1 for i, n in enumerate(SUBTYPES)}
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SUB_MM = 1.25  # sub-slice spacing for slab partial volume
PET_R = (3.5, 6.5)  # petrous pyramid radius, apex to base


# ------------------------------------------------------------------------------------------------
# small field helpers (all distances in mm of the head frame)


def aa(d, px):
    """Pixel fraction inside a surface at signed distance d: analytic anti-aliasing."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def smin(a, b, k):
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def sstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def sd_ell(x, y, z, rx, ry, rz):
    """Approximate signed distance to an origin-centred ellipsoid (good near the surface)."""
    px, py, pz = x / rx, y / ry, z / rz
    k0 = np.sqrt(px * px + py * py + pz * pz)
    k1 = np.sqrt((px / rx) ** 2 + (py / ry) ** 2 + (pz / rz) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def sd_tube(x, y, z, pts, rad):
    """Signed distance to a polyline with linearly varying radius (capsule chain)."""
    d = None
    for i in range(len(pts) - 1):
        a, b = pts[i], pts[i + 1]
        ba = b - a
        L2 = float(ba @ ba) + 1e-9
        ax, ay, az = x - a[0], y - a[1], z - a[2]
        t = np.clip((ax * ba[0] + ay * ba[1] + az * ba[2]) / L2, 0.0, 1.0)
        dx, dy, dz = ax - t * ba[0], ay - t * ba[1], az - t * ba[2]
        di = np.sqrt(dx * dx + dy * dy + dz * dz) - (rad[i] + t * (rad[i + 1] - rad[i]))
        d = di if d is None else np.minimum(d, di)
    return d


def seg2(x, y, a, b):
    """Distance in the xy-plane to a segment."""
    bax, bay = b[0] - a[0], b[1] - a[1]
    t = np.clip(((x - a[0]) * bax + (y - a[1]) * bay) / (bax * bax + bay * bay), 0.0, 1.0)
    return np.hypot(x - a[0] - t * bax, y - a[1] - t * bay)


def rotz(x, y, ang):
    c, s = math.cos(ang), math.sin(ang)
    return c * x + s * y, -s * x + c * y


def uid(*parts) -> str:
    h = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return "2.25." + str(int.from_bytes(h[:16], "big"))


def hexid(*parts, n=12) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:n]


# ------------------------------------------------------------------------------------------------
# vendor profiles


@dataclass(frozen=True)
class Site:
    name: str
    manufacturer: str
    models: tuple
    kernels: tuple  # (name, grain 0 smooth .. 1 sharper)
    signed: bool
    bits: int
    intercept: float
    slope: float
    padding: int | None  # declared PixelPaddingValue (stored)
    outside: int  # stored value outside the reconstruction circle
    descending: bool
    implicit: bool
    thick: tuple
    thin: tuple
    p_thin: float
    fov: tuple
    p_localizer: float
    naming: str
    study_desc: str
    low_hu: float  # scanners clip air here


SITES = (
    Site("ANSELM", "GE MEDICAL SYSTEMS", ("LightSpeed VCT", "Revolution CT", "Optima CT660"),
         (("STANDARD", 0.35), ("SOFT", 0.1)), True, 16, -1024.0, 1.0, -2000, -2000, True,
         False, (5.0, 2.5), (0.625,), 0.12, (220.0, 250.0), 0.5, "ge",
         "CT HEAD WO CONTRAST", -1024.0),
    Site("RIVERSIDE", "SIEMENS", ("SOMATOM Definition AS+", "SOMATOM go.Top"),
         (("H31s", 0.15), ("J40s", 0.55), ("Hr38", 0.45)), False, 12, -1024.0, 1.0, 0, 0, False,
         False, (5.0, 4.8, 3.0), (1.0, 0.75), 0.15, (200.0, 240.0), 0.7, "siemens",
         "Head^Routine", -1024.0),
    Site("KESTREL", "Philips", ("Brilliance 64", "iCT 256", "Ingenuity CT"),
         (("UB", 0.35), ("UC", 0.6), ("B", 0.2)), False, 12, -1000.0, 1.0, None, 0, False,
         False, (3.0, 2.0), (1.0, 0.9, 0.625), 0.5, (210.0, 250.0), 0.0, "philips",
         "CT BRAIN NON CONTRAST", -1000.0),
    Site("ORRIN", "TOSHIBA", ("Aquilion ONE", "Aquilion PRIME"),
         (("FC21", 0.2), ("FC26", 0.45)), True, 12, 0.0, 1.0, -2000, -2000, True,
         True, (5.0, 4.0), (1.0,), 0.1, (220.0, 240.0), 0.4, "toshiba",
         "HEAD PLAIN", -1024.0),
    Site("LOWMOOR", "UIH", ("uCT 760", "uCT 550"),
         (("B_SOFT_B", 0.4), ("H_SOFT_A", 0.15)), True, 16, -1024.0, 0.5, -3024, -3024, False,
         False, (5.0, 3.0, 2.0), (1.25,), 0.1, (200.0, 240.0), 0.3, "uih",
         "CT HEAD ROUTINE", -1024.0),
)


# ------------------------------------------------------------------------------------------------
# per-study sampling


def sample_anatomy(rng):
    u = rng.uniform
    g = NS()
    g.child = bool(rng.random() < 0.10)
    g.age = float(u(5, 12) if g.child else u(18, 95))
    g.sex = "M" if rng.random() < 0.5 else "F"
    if g.child:
        g.size, atro = u(0.80, 0.90), 0.0
    else:
        g.size = u(0.95, 1.04) * (1.02 if g.sex == "M" else 0.98)
        atro = np.clip((g.age - 35) / 55, 0, 1) * u(0.3, 1.2) + u(0, 0.12)
    g.atro = float(np.clip(atro, 0, 1))
    g.a, g.b, g.cu, g.cl = u(60, 68), u(78, 88), u(64, 72), u(50, 58)
    g.widen, g.e1y = u(0.0, 0.08), u(-2, 3)
    g.pfy, g.pfz, g.pfa, g.pfb, g.pfc = 0.53 * g.b + u(-2, 2), u(-42, -38), 0.8 * g.a, \
        0.48 * g.b, u(25, 29)
    g.zaf, g.dome, g.zsel = u(-25, -20), u(3, 7), u(-28, -25)
    g.tfx, g.tfy, g.tfz = u(32, 35), u(-8, -4), u(-31, -27)
    g.ysph, g.ypet0 = u(-30, -24), u(-3, 1)
    g.ztorc, g.yap, g.zap = u(-32, -26), u(26, 34), u(2, 8)
    g.tpost, g.tant, g.tlat = u(0.5, 0.7), u(0.45, 0.6), u(0.38, 0.5)
    g.rfm = u(14, 17)
    g.tsk = u(3.0, 4.5) if g.child else u(4.2, 6.5)
    g.tscalp = u(3, 5) if g.child else u(3, 8)
    g.tfat = g.tscalp * u(0.15, 0.4)
    g.ttemp = u(2, 5) if g.child else u(3, 7)
    g.fsinus = (not g.child) and rng.random() < 0.88
    g.fs_t = u(3, 7)
    g.troof = u(0.7, 1.3)  # orbital roofs are thin plates
    g.tcsf = 0.6 + 3.2 * g.atro + u(0, 0.4)
    g.sulw = 0.7 + 3.0 * g.atro + u(0, 0.4)
    g.suld = u(8, 14)
    g.tctx = u(2.2, 3.2)
    g.vent = u(0.6, 0.85) if g.child else 0.75 + 0.9 * g.atro + rng.normal(0, 0.08)
    if rng.random() < 0.04:
        g.vent += u(0.7, 1.3)  # hydrocephalus
    g.vent = float(max(g.vent, 0.5))
    g.vasym = u(-0.15, 0.15)
    g.sylw = 1.2 + 3.5 * g.atro + u(0, 0.8)
    g.ihw = 0.8 + 3 * g.atro + u(0, 0.5)
    g.sep = u(1.0, 2.5)
    g.wm = u(22, 30)
    g.gm = min(g.wm + u(6, 12), 45.0)
    g.deep = g.gm - u(0, 4)
    g.csf, g.soft, g.fat, g.skin = u(2, 12), u(38, 52), u(-100, -65), u(35, 55)
    g.muscle = u(40, 55)
    g.cort, g.dip, g.vitr, g.lens = u(1100, 1900), u(350, 750), u(5, 15), u(80, 115)
    g.falx, g.tent, g.choroid, g.sinus = u(35, 55), u(30, 50), u(28, 42), u(40, 60)
    g.pet = u(1300, 2100)
    g.maxmuc = u(0, 4) if rng.random() < 0.3 else 0.0  # mucosal thickening
    g.mastoid_air = u(0.2, 0.6) if g.child else u(0.5, 1.0)
    return g


def sample_mimics(rng, g, positive):
    kid = g.child
    p = {
        "pineal_calc": 0.05 if kid else 0.4,
        "choroid_calc": 0.03 if kid else 0.4,
        "falx_calcification": 0.01 if kid else 0.1,
        "dense_falx": 0.2,
        "dense_tentorium": 0.2,
        "dense_sinus": 0.15,
        "basal_ganglia_calc": 0.0 if kid else 0.04 + 0.1 * g.atro,
        "dural_plaque": 0.0 if kid else 0.08,
        "strong_streaks": 0.5,
        "scalp_hematoma": 0.3 if positive else 0.08,
        "motion": 0.07,
        "ring": 0.06,
    }
    return {k for k, v in p.items() if rng.random() < v}


# ------------------------------------------------------------------------------------------------
# the phantom


class Phantom:
    """One study: anatomy, acquisition, hemorrhage plan; ``run`` renders the volume."""

    def __init__(self, seed, index, matrix=256, n_sites=5, positive_rate=0.4, boost=1.0):
        ent = int.from_bytes(hashlib.sha256(f"rp/{seed}/{index}".encode()).digest()[:16], "big")
        rng = self.rng = np.random.default_rng(ent)
        self.seed, self.index, self.matrix = seed, index, matrix
        self.site = SITES[int(rng.integers(max(1, min(n_sites, len(SITES)))))]
        self.positive = bool(rng.random() < positive_rate)
        g = self.g = sample_anatomy(rng)
        self.mimics = sample_mimics(rng, g, self.positive)
        if g.sex == "F":
            g.sinus -= 3.0
        if "dense_sinus" in self.mimics:
            g.sinus = rng.uniform(62, 74)
        if "dense_falx" in self.mimics:
            g.falx = rng.uniform(60, 80)
        if "dense_tentorium" in self.mimics:
            g.tent = rng.uniform(55, 75)
        self._acquisition()
        self._geometry()
        self._grids()
        self._structures()
        self.foci = self._plan_foci(boost) if self.positive else []
        self._plan_slices()
        self.rng_loc = float(rng.random())

    # -- acquisition ---------------------------------------------------------------------------
    def _acquisition(self):
        rng, st, g = self.rng, self.site, self.g
        thin = rng.random() < st.p_thin
        thk = float(rng.choice(st.thin if thin else st.thick))
        if self.matrix <= 256 and thk < 1.0:
            thk = 1.0  # keeps 256^2 studies cheap (<= ~160 slices)
        self.thk = thk
        self.nsub = max(1, math.ceil(thk / SUB_MM - 1e-9))
        head_r = (g.b + g.tsk + g.tscalp + 6) * g.size
        self.fov = float(max(rng.uniform(*st.fov), min(250.0, 2 * head_r + 8)))
        self.d = self.fov / self.matrix
        self.kernel, self.grain = st.kernels[int(rng.integers(len(st.kernels)))]
        self.model = st.models[int(rng.integers(len(st.models)))]
        self.kvp = float(rng.choice([120.0, 120.0, 100.0, 140.0]))
        self.ma = int(rng.integers(150, 380))
        base = rng.uniform(3.0, 6.0) * (5.0 / thk) ** 0.35 * (300.0 / self.ma) ** 0.25
        self.noise_sd = float(np.clip(base, 3.0, 10.0))
        self.blur = float(rng.uniform(0.4, 0.8))
        self.fc = 0.26 + 0.2 * self.grain + rng.uniform(-0.03, 0.03)  # cycles/mm
        self.cup = float(rng.uniform(1.5, 6.0))
        self.streak = float(rng.uniform(15, 40) if "strong_streaks" in self.mimics
                            else rng.uniform(3, 10))

    def _geometry(self):
        rng, g = self.rng, self.g
        s = g.size
        ang = np.radians([np.clip(rng.normal(0, 6), -15, 15), np.clip(rng.normal(0, 4), -10, 10),
                          np.clip(rng.normal(0, 5), -10, 10)])
        yaw, roll, pitch = ang
        cz, sz = math.cos(yaw), math.sin(yaw)
        cy, sy = math.cos(roll), math.sin(roll)
        cx, sx = math.cos(pitch), math.sin(pitch)
        Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        self.R = Rz @ Rx @ Ry
        self.rot_deg = np.degrees(ang)
        mx = max(0.0, self.fov / 2 - (g.a + 20) * s - 4)
        my = max(0.0, self.fov / 2 - (g.b + g.tsk + g.tscalp) * s - 6)
        self.Ch = np.array([rng.uniform(-min(mx, 12), min(mx, 12)),
                            rng.uniform(-min(my, 10), min(my, 10)), rng.uniform(-150, 150)])
        self.M = (self.R.T / s).astype(F32)
        self.x0 = -self.fov / 2 + self.d / 2
        self.y0 = -self.fov / 2 + self.d / 2
        self.px = self.d / s  # pixel size in head-frame mm

    def to_patient(self, p):
        return self.g.size * (self.R @ np.asarray(p, float)) + self.Ch

    def _grids(self):
        """Coarse 3-D noise fields: sulcal level set and tissue texture (3 mm grid)."""
        rng = self.rng
        self.gorig = np.array([-96.0, -120.0, -100.0])
        self.gh = 3.0
        shape = (65, 81, 67)
        n1 = ndimage.gaussian_filter(rng.standard_normal(shape).astype(F32), 1.25, mode="wrap")
        n1 /= n1.std()
        gx, gy, gz = np.gradient(n1, self.gh)
        self.sulc = (n1 / np.maximum(np.sqrt(gx * gx + gy * gy + gz * gz), 0.02)).astype(F32)
        n2 = ndimage.gaussian_filter(rng.standard_normal(shape).astype(F32), 1.2, mode="wrap")
        self.tex = (n2 / n2.std()).astype(F32)

    def sample(self, grid, x, y, z):
        c = np.stack([(x - self.gorig[0]) / self.gh, (y - self.gorig[1]) / self.gh,
                      (z - self.gorig[2]) / self.gh])
        return ndimage.map_coordinates(grid, c.reshape(3, -1), order=1, mode="nearest",
                                       prefilter=False).reshape(np.shape(x))

    # -- global fields ------------------------------------------------------------------------
    def floor(self, x, y):
        """Anterior fossa (domed orbital roofs, low cribriform plate) and the central skull
        base with the pituitary fossa; the temporal fossae are separate bowls (``cavity``)."""
        g = self.g
        ax = np.abs(x)
        ant = (g.zaf + g.dome * np.exp(-(((ax - 28) / 13) ** 2)) - 5 * np.exp(-((ax / 6) ** 2))
               + 0.12 * np.maximum(g.ysph - 12 - y, 0))
        mid = g.zsel - 6 * np.exp(-(x * x) / 40 - ((y - g.ysph - 14) ** 2) / 30)
        w = 1 / (1 + np.exp(-(y - (g.ysph + 0.004 * ax * ax)) / 2.0))
        fl = ant + (mid - ant) * w
        return np.where(y > self.ypet(x), -300.0, fl)

    def ypet(self, x):
        return self.g.ypet0 + 0.62 * np.maximum(np.abs(x) - 15, 0)

    def tent(self, x, y):
        g = self.g
        za = np.where(y > g.yap, g.zap - (y - g.yap) * g.tpost, g.zap - (g.yap - y) * g.tant)
        return np.maximum(za - g.tlat * np.abs(x), g.ztorc - 10)

    def notch(self, x, y):
        g = self.g
        w = 15 * np.sqrt(np.clip((g.yap - 4 - y) / (g.yap - 4 - g.ypet0), 0, 1))
        return np.abs(x) < w

    def cavity(self, x, y, z):
        g = self.g
        xa = x / (1 + g.widen * np.clip(y / g.b, -1, 1))
        d1 = sd_ell(xa, y - g.e1y, z, g.a, g.b, np.where(z > 0, F32(g.cu), F32(g.cl)))
        fd = self.floor(x, y) - z
        dom = fd > d1
        d1 = np.maximum(d1, fd)
        if np.min(z) > 0:  # above the skull base only the vault matters
            return d1, dom
        d2 = sd_ell(x, y - g.pfy, z - g.pfz, g.pfa, g.pfb, g.pfc)
        d = smin(d1, d2, 6.0)
        ax = np.abs(x)
        d3 = sd_ell(ax - g.tfx, y - g.tfy, z - g.tfz, 19, 28, 15)  # middle cranial fossae
        d = smin(d, np.maximum(d3, y - g.ypet0 - 0.62 * np.maximum(ax - 15, 0) - 2), 5.0)
        if np.min(z) > -50:
            return d, dom
        dc = np.maximum(np.hypot(x, y - self.ycanal(z)) - g.rfm, z + 54)
        return smin(d, dc, 3.0), dom

    def ycanal(self, z):
        return 18 + (-44 - z) * 0.13

    def skull_t(self, x, y, z, dom):
        g = self.g
        ux, uy = np.abs(x) / g.a, y / g.b
        fr = np.clip(-uy, 0, 1) ** 2
        oc = np.clip(uy, 0, 1) ** 2 * (z < 15)
        tp = np.exp(-(((ux - 0.95) / 0.22) ** 2) - ((z + 8) / 22) ** 2 - (y / 32) ** 2)
        t = g.tsk * (1 + 0.2 * fr + 0.25 * oc - 0.45 * tp)
        if g.fsinus:
            t = t + g.fs_t * np.exp(-((x / 22) ** 2) - ((z + 6) / 14) ** 2) * np.clip(
                -uy - 0.6, 0, 0.4) * 2.5
        tfl = np.where(y < g.ysph + 2, g.troof, 3.5)
        return np.where(dom, tfl, t)

    def scalp(self, x, y, z):
        g = self.g
        zz, yy = ((z + 5) / 30) ** 2, ((y + 12) / 38) ** 2
        w = sstep(0.55, 0.8, np.abs(x) / g.a) * np.exp(-zz * zz - yy * yy)
        t = g.tscalp + g.ttemp * w
        for c, h, r in self.bumps:
            t = t + h * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (r * r))
        return t, w

    def skin(self, x, y, z, D, t):
        g = self.g
        sc, _ = self.scalp(x, y, z)
        sk = D - t - sc
        if np.min(z) > 5:
            return sk
        sk = smin(sk, sd_ell(x, y + 0.55 * g.b, z + 45, 0.8 * g.a, 0.62 * g.b, 30), 12)
        sk = smin(sk, sd_ell(x, y + 0.12 * g.b, z + 64, 0.95 * g.a, 0.85 * g.b, 30), 12)
        sk = smin(sk, sd_ell(x, y - 0.15 * g.b, z + 98, 0.72 * g.a, 0.6 * g.b, 40), 12)
        sk = smin(sk, sd_ell(x, y + g.b + 16, z + 60, 10, 15, 19), 5)
        return sk

    def ears(self, x, y, z):
        g = self.g
        xe = g.a + g.tsk + g.tscalp + 5
        return np.minimum(sd_ell(x - xe, y - 14, z + 40, 2.5, 12, 24),
                          sd_ell(x + xe, y - 14, z + 40, 2.5, 12, 24))

    def surface(self, o, v, hi=150.0):
        """Inner-table point along a ray (bisection on the cavity field)."""
        o, v = np.asarray(o, float), np.asarray(v, float) / np.linalg.norm(v)
        lo = 0.0
        for _ in range(36):
            m = 0.5 * (lo + hi)
            p = o + m * v
            if self.cavity(p[:1], p[1:2], p[2:3])[0][0] < 0:
                lo = m
            else:
                hi = m
        p = o + lo * v
        e = 0.5
        n = np.array([self.cavity(*(p + e * ax)[:, None])[0][0]
                      - self.cavity(*(p - e * ax)[:, None])[0][0] for ax in np.eye(3)])
        return p, n / (np.linalg.norm(n) + 1e-9)

    # -- fixed anatomy ------------------------------------------------------------------------
    def _structures(self):
        g, rng = self.g, self.rng
        u = rng.uniform
        V = g.vent
        self.bumps = []
        if "scalp_hematoma" in self.mimics:
            p, n = self.surface((0, 0, 10), (u(-1, 1), u(-1, 1), u(0.0, 0.9)))
            self.bumps.append((p + n * (g.tsk + 2), u(4, 12), u(15, 30)))
        xs = 1 + 0.25 * (V - 1)
        lat = np.array([[13, -30, 7, 2.0], [9.5, -22, 9, 4.0], [6.5, -8, 12, 4.0],
                        [7.5, 6, 17, 4.0], [13, 20, 17, 4.5], [21, 28, 11, 6.0],
                        [22, 40, 8, 3.5], [20, 50, 8, 1.2]])
        tmp = np.array([[21, 28, 11, 5.0], [29, 22, -1, 3.5], [32, 8, -12, 2.8],
                        [30, -8, -19, 2.2], [28, -17, -21, 1.2]])
        self.vents = []
        for side in (1, -1):
            f = V * (1 + side * g.vasym)
            for arr, zs in ((lat, 1.6), (tmp, 1.0)):
                pts = arr[:, :3] * [side * xs, 1, 1 / zs]
                self.vents.append((side, zs, pts, arr[:, 3] * f))
        self.caud = [(np.array([side * (11 + 2 * (V - 1)), -17, 8]), (5, 8, 8))
                     for side in (1, -1)]
        # venous sinuses
        yt = self.surface((0, 20, g.ztorc), (0, 1, 0))[0][1]
        self.torc = np.array([0, yt - 4.5, g.ztorc])
        self.rsin = u(2.8, 4.2)
        self.sinuses = [(np.array([[0, g.yap - 4, g.zap - 2], self.torc]), np.array([2.3, 2.8]))]
        dom = 1 if rng.random() < 0.6 else -1
        for side in (1, -1):
            pts = [self.torc]
            for th, zz in ((25, g.ztorc - 1), (55, g.ztorc - 4), (80, g.ztorc - 8)):
                t = math.radians(th)
                o = np.array([0, g.pfy - 8, zz])
                q, _ = self.surface(o, (side * math.sin(t), math.cos(t), 0))
                pts.append(q - 3.5 * (q - o) / np.linalg.norm(q - o))
            for dy, zz in ((-16, -46), (-24, -55)):
                o = np.array([0, g.pfy + dy, zz])
                q, _ = self.surface(o, (side, 0, 0))
                pts.append(q - [side * 3.5, 0, 0])
            pts.append(np.array([side * 28, g.pfy - 30, -62]))
            r = self.rsin * (1.15 if side == dom else 0.85)
            self.sinuses.append((np.array(pts), np.full(len(pts), r)))
        # calcifications and dural plaques
        self.calcs = []  # (center, radii, hu)
        calc = self.calcs.append
        if "pineal_calc" in self.mimics:
            calc((np.array([0, 21, 2]), (u(1, 4),) * 3, u(100, 600)))
        if "choroid_calc" in self.mimics:
            for side in (1, -1):
                if rng.random() < 0.85:
                    r = u(1.2, 3.5)
                    calc((np.array([side * 21.5 * xs, 28, 11]), (r, r * 1.3, r), u(80, 300)))
        if "basal_ganglia_calc" in self.mimics:
            for side in (1, -1):
                if rng.random() < 0.8:
                    calc((np.array([side * 18, -5, -1]), (u(1.5, 3), u(2, 5), u(2, 4)),
                          u(60, 200)))
        if "falx_calcification" in self.mimics:
            for _ in range(int(rng.integers(1, 4))):
                y = u(-0.6, 0.3) * g.b
                z = u(self.zfalx(y) + 6, 55)
                calc((np.array([0, y, z]), (u(0.8, 1.6), u(3, 10), u(2, 6)), u(150, 800)))
        self.plaques = []
        if "dural_plaque" in self.mimics:
            for _ in range(int(rng.integers(1, 3))):
                p, n = self.surface((0, 0, 10), (u(-1, 1), u(-1, 1), u(0.2, 1.0)))
                self.plaques.append((p - n * 0.8, u(2.5, 5.5), u(200, 600)))
        self.pineal = np.array([0, 21, 2])
        # skull base pieces that are cut out of the cavity
        self.pet = [np.array([[s * 15, g.ypet0 + 3, -34], [s * 46, g.ypet0 + 24, -41]])
                    for s in (1, -1)]
        self.clivus = np.array([[0, -10, -24], [0, 10, -63]])
        # frontal sinus sits in the middle of the frontal bone
        if g.fsinus:
            q, _ = self.surface((0, 0, -6), (0, -1, 0))
            x_ = np.array([0.0])
            t = float(self.skull_t(x_, q[1:2], q[2:3], np.array([False]))[0])
            self.fs = (np.array([0, q[1] - t / 2, -6]), (u(10, 20), max(1.5, t / 2 - 1.6),
                                                           u(8, 13)), u(-3, 3))
        self.ring_r = u(10, 80) if "ring" in self.mimics else None
        self.ring_a = u(5, 15) * (1 if rng.random() < 0.5 else -1)

    def zfalx(self, y):
        g = self.g
        return np.interp(y, [-g.b, -0.6 * g.b, -0.3 * g.b, 0.25 * g.b, g.yap],
                         [g.zaf + 2, 0, 26, 28, g.zap + 2])

    def zih(self, y):
        g = self.g
        return np.interp(y, [-g.b, -0.45 * g.b, -0.3 * g.b, 0.25 * g.b, g.yap],
                         [-40, -30, 18, 22, g.zap])

    # -- hemorrhage plan ------------------------------------------------------------------------
    def _plan_foci(self, boost):
        rng, g = self.rng, self.g
        u = rng.uniform
        n = int(rng.choice([1, 2, 3], p=[0.6, 0.28, 0.12]))
        total = math.exp(u(math.log(0.2), math.log(80))) * boost
        parts = rng.dirichlet(np.ones(n)) * total
        kinds = rng.choice(SUBTYPES, size=n, p=[0.12, 0.28, 0.22, 0.25, 0.13])
        foci = []
        for kind, vml in zip(kinds, parts, strict=True):
            vq = max(vml, 0.1) * 1000 / g.size ** 3
            f = NS(kind=str(kind), code=CODE[str(kind)], vq=vq, side=1 if rng.random() < .5 else -1)
            getattr(self, "_plan_" + f.kind.lower())(f, rng)
            foci.append(f)
        return foci

    def _plan_edh(self, f, rng):
        u = rng.uniform
        if rng.random() < 0.75:
            phi, el = math.radians(u(-35, 35)), math.radians(u(-10, 45))
        else:
            phi, el = math.radians(rng.choice([-1, 1]) * u(50, 80)), math.radians(u(0, 40))
        v = (f.side * math.cos(el) * math.cos(phi), math.cos(el) * math.sin(phi), math.sin(el))
        f.p, f.n = self.surface((0, 0, 5), v)
        k = u(0.25, 0.45)
        f.R = float(np.clip((2 * f.vq / (math.pi * k)) ** (1 / 3), 5, 60))
        f.h = float(np.clip(2 * f.vq / (math.pi * f.R ** 2), 1.5, 30))
        f.hu = u(55, 85)
        f.swirl = rng.random() < 0.3
        f.sut = [(fn, float(np.sign(fn(*f.p[:, None])[0]))) for fn, ok in self.sutures()
                 if ok(*f.p[:, None])[0]]
        if rng.random() < 0.6:
            t = np.cross(f.n, rng.normal(size=3))
            f.frac = (t / np.linalg.norm(t), u(0.6, 1.3))
            self.bumps.append((f.p + f.n * (self.g.tsk + 2), u(4, 10), u(15, 25)))
        else:
            f.frac = None

    def sutures(self):
        """(surface, where it exists) for coronal, lambdoid, sagittal and squamosal sutures."""
        g = self.g

        def cor(x, y, z):
            return y - (-0.22 * g.b - 0.15 * (g.cu - z)) + 0.8 * np.sin(x * 0.9)

        def lam(x, y, z):
            return ((y - 0.78 * g.b) * 61 - (z - 0.45 * g.cu) * 20) / 64 + 0.8 * np.sin(x * 0.9)

        return (
            (cor, lambda x, y, z: z > -15),
            (lam, lambda x, y, z: y > 0.2 * g.b),
            (lambda x, y, z: x + 0.6 * np.sin(y * 0.9),
             lambda x, y, z: (z > 0.3 * g.cu) & (cor(x, y, z) > 0) & (lam(x, y, z) < 0)),
            (lambda x, y, z: z - (8 - 10 * (y / 40) ** 2) + 0.5 * np.sin(y),
             lambda x, y, z: (np.abs(x) > 0.6 * g.a) & (np.abs(y) < 45)),
        )

    def _plan_sdh(self, f, rng):
        u = rng.uniform
        r = rng.random()
        f.sub = "convexity" if r < 0.7 else ("falx" if r < 0.85 else "tent")
        kind = rng.choice(["acute", "hyper", "iso", "chronic", "mixed"],
                          p=[0.55, 0.1, 0.1, 0.12, 0.13])
        f.dens = str(kind)
        f.hu = {"acute": u(55, 80), "hyper": u(38, 52), "iso": u(30, 45), "chronic": u(5, 25),
                "mixed": u(10, 25)}[f.dens]
        f.hu2 = u(55, 75)
        f.level = u(0.3, 0.7)
        if f.sub == "convexity":
            phi, el = math.radians(u(-60, 60)), math.radians(u(0, 40))
            v = (f.side * math.cos(el) * math.cos(phi), math.cos(el) * math.sin(phi),
                 math.sin(el))
            f.p, f.n = self.surface((0, 0, 5), v)
            f.R = u(35, 80)
            f.h = 1.5 * f.vq / (math.pi * f.R ** 2)
            if f.h < 1.6:
                f.h = 1.6
                f.R = max(8.0, math.sqrt(1.5 * f.vq / (math.pi * f.h)))
            f.h = min(f.h, 26.0)
        else:
            f.h = u(2, 6)
            f.R = float(np.clip(math.sqrt(1.5 * f.vq / (math.pi * f.h)), 6, 45))
            if f.sub == "falx":
                y = u(-0.4, 0.4) * self.g.b
                f.p = np.array([0, y, u(self.zfalx(y) + 8, 50)])
            else:
                x, y = f.side * u(15, 35), u(30, 55)
                f.p = np.array([x, y, float(self.tent(np.array([x]), np.array([y]))[0])])
        f.pat_y = self.to_patient(f.p)[1]

    def _plan_sah(self, f, rng):
        u = rng.uniform
        r = rng.random()
        f.hu = u(50, 75)
        if r < 0.4:
            f.sub = "convexity"
            p, n = self.surface((0, 0, 10), (f.side * u(0.2, 1), u(-1, 1), u(0.3, 1.2)))
            f.c, occ = p - n * 5, 0.12
        elif r < 0.7:
            f.sub, f.c, occ = "sylvian", np.array([f.side * 40, -12, -8]), 0.15
        else:
            f.sub, f.c, occ = "basal", np.array([0, -2, -18]), 0.2
        f.R = float(np.clip((3 * f.vq / (4 * math.pi * occ)) ** (1 / 3), 8, 50))

    def _plan_iph(self, f, rng):
        u = rng.uniform
        g = self.g
        s = f.side
        r = rng.random()
        if r < 0.3:
            f.sub, c = "bg", np.array([s * 22, -5, 0])
        elif r < 0.45:
            f.sub, c = "thalamus", np.array([s * 11, 8, 4])
        elif r < 0.75:
            f.sub = "lobar"
            p, n = self.surface((0, 0, 10), (s * u(0.2, 1), u(-1, 1), u(-0.1, 0.9)))
            c = p - n * u(14, 28)
        elif r < 0.85:
            f.sub, c = "cerebellar", np.array([s * 20, g.pfy + 4, g.pfz])
        else:
            f.sub = "contusion"
            if rng.random() < 0.5:
                c = np.array([s * u(8, 25), -g.b + u(16, 28), g.zaf + u(7, 13)])
            else:
                c = np.array([s * u(38, 46), u(-36, -28), u(-32, -26)])
        f.c = c + rng.normal(0, 2.0, 3)
        rm = (3 * f.vq / (4 * math.pi * 1.3)) ** (1 / 3)
        if f.sub == "contusion":
            nb = int(rng.integers(3, 9))
            rb = max(1.5, rm * nb ** (-1 / 3))
            f.lobes = [(f.c + rng.normal(0, max(rm, 4), 3), (rb * u(0.6, 1.2),) * 3, 0.0)
                       for _ in range(nb)]
            f.edema = u(2, 6)
            f.hu = u(50, 75)
        else:
            f.lobes = [(f.c, (rm * u(0.8, 1.1), rm * u(0.8, 1.2), rm * u(0.7, 1.0)),
                        u(0, math.pi))]
            for _ in range(int(rng.integers(1, 5))):
                f.lobes.append((f.c + rng.normal(0, 0.45 * rm, 3),
                                tuple(rm * u(0.4, 0.8, 3)), u(0, math.pi)))
            f.edema = u(1.5, 7)
            f.hu = u(55, 88)
        f.rough = 0.15 * rm + 0.4
        f.rad = max(np.linalg.norm(c_ - f.c) + max(r_) for c_, r_, _ in f.lobes) + f.edema + 4
        f.level = f.vq > 15000 and rng.random() < 0.25

    def _plan_ivh(self, f, rng):
        f.hu = rng.uniform(45, 80)
        sm = f.vq < 3000
        if rng.random() < 0.7:
            f.sub = "layer"
            f.ylev = self._ivh_level(f.vq)
        else:
            f.sub = "cast"
            f.vid = ("v4" if rng.random() < 0.5 else "v3") if sm else \
                ("lat+" if f.side > 0 else "lat-")

    def _ivh_level(self, vq):
        """Patient-y level that leaves about vq mm^3 of dependent ventricle below it."""
        g = self.g
        x, y, z = np.meshgrid(np.arange(-36, 36, 1.0), np.arange(0, 60, 1.0),
                              np.arange(-8, 26, 1.0), indexing="ij")
        inside = np.zeros(x.shape, bool)
        for side, zs, pts, rad in self.vents:
            inside |= (sd_tube(x, y, z / zs, pts, rad) < 0) & (side * x > g.sep / 2)
        P = self.g.size * (np.stack([x[inside], y[inside], z[inside]], 1) @ self.R.T) + self.Ch
        py = np.sort(P[:, 1])[::-1]
        if py.size == 0:
            return 1e9
        k = int(np.clip(vq, 1, 0.6 * py.size))
        return float(py[k - 1])

    # -- slices ---------------------------------------------------------------------------------
    def _plan_slices(self):
        g, rng = self.g, self.rng
        low = [self.to_patient(p)[2] for p in ((0, 18, -62), (30, -g.b + 5, -56),
                                             (-30, -g.b + 5, -56))]
        # coarse patient grid: head top and per-slice canvas boxes
        st = 5.0
        ax = np.arange(-self.fov / 2, self.fov / 2 + st, st)
        zz = np.arange(min(low) - 20, self.Ch[2] + 130 * g.size, 2.5)
        P = np.stack(np.meshgrid(ax, ax, zz, indexing="ij"), -1).reshape(-1, 3)
        q = ((P - self.Ch) @ self.M.T.astype(float)).T
        D, dom = self.cavity(*q)
        t = self.skull_t(*q, dom)
        sk = np.minimum(self.skin(*q, D, t), self.ears(*q)).reshape(len(ax), len(ax), len(zz))
        inside = sk < 0
        top = zz[np.nonzero(inside.any((0, 1)))[0].max()] + 1.0
        self.top_margin = rng.uniform(1.0, 4.0)
        start = min(low) - rng.uniform(0, 6)
        top += self.top_margin
        nmax = 250 if self.thk < 2.0 else 64
        n = math.ceil((top - start) / self.thk)
        if n > nmax:
            start, n = top - nmax * self.thk, nmax
        n = max(n, 20)
        z0 = round(start, 2)
        self.z = z0 + self.thk * np.arange(n)
        self.sub_off = ((np.arange(self.nsub) + 0.5) / self.nsub - 0.5) * self.thk
        near = sk < 4.0
        self.boxes = []
        for zc in self.z:
            sel = (zz >= zc - self.thk / 2 - 3) & (zz <= zc + self.thk / 2 + 3)
            m = near[:, :, sel].any(2)
            if not m.any():
                self.boxes.append(None)
                continue
            ix, iy = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
            c0 = int(max(0, ((ax[ix[0]] - st) - self.x0) / self.d))
            c1 = int(min(self.matrix, ((ax[ix[-1]] + st) - self.x0) / self.d + 2))
            r0 = int(max(0, ((ax[iy[0]] - st) - self.y0) / self.d))
            r1 = int(min(self.matrix, ((ax[iy[-1]] + st) - self.y0) / self.d + 2))
            self.boxes.append((r0, r1, c0, c1))
        # head holder: a pad and carbon shell cradling the occiput (patient frame)
        back = []
        for k, zc in enumerate(self.z):
            j = np.argmin(np.abs(zz - zc))
            cols = inside[:, :, j]
            if cols.any():
                back.append(ax[np.nonzero(cols.any(0))[0].max()])
        self.hold_c = (self.Ch[0], self.Ch[1] - 20.0)
        self.hold_r = (np.percentile(back, 90) if back else 100.0) - self.hold_c[1] + 0.5
        self.hold_top = self.Ch[2] + rng.uniform(0, 30) * g.size
        self.pad_t = rng.uniform(5, 12)
        self.pad_hu = rng.uniform(-200, -60) if rng.random() < 0.6 else rng.uniform(-750, -550)
        if self.pad_hu < -300:
            self.pad_t = rng.uniform(3, 6)
        self.shell_hu = rng.uniform(150, 350)
        nm = len(self.z)
        self.motion = None
        if "motion" in self.mimics:
            k0 = int(rng.integers(0, nm))
            self.motion = (k0, k0 + int(rng.integers(2, 7)), rng.uniform(1.5, 4.0) / self.d,
                           rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.35))

    # -- painting -----------------------------------------------------------------------------
    def box(self, c, r):
        P = self.to_patient(c)
        rr = r * self.g.size
        if P[2] + rr < self.zlo or P[2] - rr > self.zhi:
            return None
        i0 = max(0, int((P[1] - rr - self.y0) / self.d) - self.r0)
        i1 = min(self.h, int((P[1] + rr - self.y0) / self.d) + 2 - self.r0)
        j0 = max(0, int((P[0] - rr - self.x0) / self.d) - self.c0)
        j1 = min(self.w, int((P[0] + rr - self.x0) / self.d) + 2 - self.c0)
        if i1 <= i0 or j1 <= j0:
            return None
        return (slice(None), slice(i0, i1), slice(j0, j1))

    def pts(self, ix):
        return self.X[ix], self.Y[ix], self.Z[ix]

    def paint(self, ix, alpha, value, blood=None, code=0):
        """Composite a material over the canvas; blood fractions follow the same rule."""
        flat = isinstance(ix, np.ndarray)
        hu = self.hu.reshape(-1) if flat else self.hu
        h = hu[ix]
        h += alpha * (value - h)
        if flat:
            hu[ix] = h
        if blood is None and self.F is None:
            return
        if self.F is None:
            self.F = np.zeros(self.hu.shape, F32)
            self.T = np.zeros(self.hu.shape, np.uint8)
        F = self.F.reshape(-1) if flat else self.F
        f = F[ix]
        if blood is None:
            f *= 1 - alpha
        else:
            ab = alpha * blood
            f += ab - alpha * f
            T = self.T.reshape(-1) if flat else self.T
            t = T[ix]
            t[ab > 0.3] = code
            if flat:
                T[ix] = t
        if flat:
            F[ix] = f

    def csf(self, x, y, z, where):
        """CSF value at points, with subarachnoid or ventricular blood where a focus says so."""
        val, bl, code = self.g.csf, None, 0
        for f in self.foci:
            if f.kind == "SAH" and where == "sub":
                r = np.clip((f.R - np.sqrt((x - f.c[0]) ** 2 + (y - f.c[1]) ** 2
                                           + (z - f.c[2]) ** 2)) / 4 + 0.5, 0, 1)
            elif f.kind == "IVH" and where.startswith(("lat", "v")):
                if f.sub == "layer":
                    if not where.startswith("lat"):
                        continue
                    py = self.PYf(x)
                    r = np.clip((py - f.ylev) / 0.7 + 0.5, 0, 1)
                elif f.vid == where:
                    r = np.ones_like(x)
                else:
                    continue
            else:
                continue
            bl = r if bl is None else np.maximum(bl, r)
            val = val + (f.hu - self.g.csf) * r
            code = f.code
        return val, bl, code

    def render_slab(self, k):
        g = self.g
        r0, r1, c0, c1 = self.boxes[k]
        self.r0, self.c0, self.h, self.w = r0, c0, r1 - r0, c1 - c0
        zs = self.z[k] + self.sub_off
        self.zlo, self.zhi = zs[0] - self.thk / self.nsub, zs[-1] + self.thk / self.nsub
        M = self.M
        xs = (self.x0 + self.d * np.arange(c0, c1) - self.Ch[0]).astype(F32)
        ys = (self.y0 + self.d * np.arange(r0, r1) - self.Ch[1]).astype(F32)
        zr = (zs - self.Ch[2]).astype(F32)
        self.X, self.Y, self.Z = (M[i, 0] * xs[None, None, :] + M[i, 1] * ys[None, :, None]
                                  + M[i, 2] * zr[:, None, None] for i in range(3))
        shape = self.X.shape
        self.PY = np.ascontiguousarray(np.broadcast_to((ys + self.Ch[1])[None, :, None], shape))
        self.hu = np.ascontiguousarray(np.broadcast_to(self.bg(k)[r0:r1, c0:c1], shape),
                                       dtype=F32)
        self.F = self.T = None
        t2 = self.tex2d(k)[:, r0:r1, c0:c1]
        self.tex2, self.tex3 = t2[0][None], t2[1][None]
        X, Y, Z = self.X, self.Y, self.Z
        D, dom = self.cavity(X, Y, Z)
        self.D = D
        for seg in self.pet:
            ix = self.box(seg.mean(0), 28)
            if ix:
                D[ix] = np.maximum(D[ix], -sd_tube(*self.pts(ix), seg, PET_R))
        ix = self.box(self.clivus.mean(0), 30)
        if ix:
            x, y, z = self.pts(ix)
            D[ix] = np.maximum(D[ix], -sd_tube(x / 2.0, y, z, self.clivus * [0.5, 1, 1],
                                               (5.5, 5.5)))
        ix = self.box((0, -g.b + 18, g.zaf), 14)
        if ix:
            x, y, z = self.pts(ix)
            cg = np.maximum(np.maximum(np.abs(x) - 1.2, np.abs(y + g.b - 18) - 8),
                            np.abs(z - g.zaf + 4) - 7)
            D[ix] = np.maximum(D[ix], -cg)
        self.tsk = self.skull_t(X, Y, Z, dom)
        self._outer()
        self._face()
        self._skull()
        self._brain()
        self._deep()
        self._dura()
        for f in self.foci:
            getattr(self, "_paint_" + f.kind.lower())(f)
        hu = self.hu.mean(0)
        if self.F is None:
            return hu, None, None
        F = self.F.mean(0)
        T = np.take_along_axis(self.T, np.argmax(self.F, 0)[None], 0)[0]
        return hu, F, T

    def PYf(self, x):
        return self._pyf

    # -- outer layers -------------------------------------------------------------------------
    def _outer(self):
        g, px = self.g, self.px
        X, Y, Z, D, t = self.X, self.Y, self.Z, self.D, self.tsk
        sk = self.skin(X, Y, Z, D, t)
        ds = -sk
        soft = g.soft + (g.fat - g.soft) * np.clip(self.tex3 - 1.8, 0, 1) * (Z < -35)
        v = np.where(ds < 1.4, g.skin, np.where(ds < 1.4 + g.tfat, g.fat, soft))
        _, wt = self.scalp(X, Y, Z)
        v = np.where((D > t) & (D < t + g.ttemp * wt) & (ds > 1.4), g.muscle, v)
        self.inhead = aa(sk + 1.0, px)
        self.paint((slice(None),) * 3, aa(sk, px), v)
        ix = self.box((0, 14, -40), g.a + g.tsk + g.tscalp + 16)
        if ix:
            x, y, z = self.pts(ix)
            self.paint(ix, aa(self.ears(x, y, z), px), g.soft - 10)

    def _face(self):
        g, px = self.g, self.px
        D = self.D
        tex = self.tex3

        def put(ix, a, v):  # face structures never leave the skin
            self.paint(ix, a * self.inhead[ix], v)

        air = -1000.0
        for s in (1, -1):
            oc = np.array([s * 30, -g.b + 14, -40])
            ix = self.box(oc, 26)
            if ix:
                x, y, z = self.pts(ix)
                xo, yo, zo = x - oc[0], y - oc[1], z - oc[2]
                orb = sd_ell(xo, yo, zo, 17, 24, 15)
                put(ix, aa(np.abs(orb - 0.6) - 0.6, px) * (yo > 2), g.cort * 0.5)
                put(ix, aa(orb, px), g.fat)
                for mx in (-13, 13):  # medial / lateral rectus
                    put(ix, aa(sd_ell(xo - mx * 0.9, yo - 6, zo, 2.5, 14, 4), px),
                               g.muscle)
                gc = np.array([s * 31, -g.b + 4, -40])
                on = np.array([[gc[0], gc[1] + 10, gc[2]], [s * 12, -g.b + 50, -32]])
                put(ix, aa(sd_tube(x, y, z, on, (2.2, 2.0)), px), g.wm + 4)
                xg, yg, zg = x - gc[0], y - gc[1], z - gc[2]
                rg = np.sqrt(xg * xg + yg * yg + zg * zg) - 11.5
                put(ix, aa(rg, px), g.skin)
                put(ix, aa(rg + 1.0, px), g.vitr)
                put(ix, aa(sd_ell(xg, yg + 8.5, zg, 4.5, 2.0, 4.5), px), g.lens)
            # maxillary sinus
            mc = np.array([s * 27, -g.b + 22, -70])
            ix = self.box(mc, 20)
            if ix:
                x, y, z = self.pts(ix)
                e = sd_ell(x - mc[0], y - mc[1], z - mc[2], 13, 17, 15)
                put(ix, aa(e - 1.5, px), g.cort * 0.7)
                put(ix, aa(e, px), g.soft)
                put(ix, aa(e + g.maxmuc, px), air)
            # zygomatic arch, condyle, mastoid, ear canal
            zy = np.array([[s * 0.72 * g.a, -g.b + 30, -56], [s * 0.84 * g.a, -22, -53],
                           [s * 0.8 * g.a, 8, -48]])
            ix = self.box(zy.mean(0), 45)
            if ix:
                x, y, z = self.pts(ix)
                put(ix, aa(sd_tube(x, y, z / 1.6, zy / [1, 1, 1.6], (3, 3, 3)), px),
                           g.dip + 200)
                put(ix, aa(sd_ell(x - s * 50, y - 6, z + 60, 8, 5, 6), px), g.dip + 300)
            mc = np.array([s * 51, g.ypet0 + 30, -52])
            ix = self.box(mc, 18)
            if ix:
                x, y, z = self.pts(ix)
                e = sd_ell(x - mc[0], y - mc[1], z - mc[2], 11, 12, 14)
                put(ix, aa(e, px), g.cort * 0.8)
                cells = np.where(np.abs(tex[ix]) < 0.35, g.dip + 200, air)
                put(ix, aa(e + 1.5, px) * g.mastoid_air, cells)
            ec = np.array([[s * (g.a + g.tsk + g.tscalp + 3), 14, -42], [s * 40, 14, -42]])
            ix = self.box(ec.mean(0), 25)
            if ix:
                put(ix, aa(sd_tube(*self.pts(ix), ec, (3.5, 2.5)), px), air)
        # ethmoid cells between the orbits, nasal cavity, nasopharynx
        ix = self.box((0, -g.b + 24, -40), 28)
        if ix:
            x, y, z = self.pts(ix)
            e = np.maximum(sd_ell(x, y + g.b - 24, z + 40, 11, 16, 12), 1.6 - D[ix])
            cells = np.where(np.abs(tex[ix]) < 0.3, g.dip, air)
            put(ix, aa(e, px), cells)
        ix = self.box((0, -g.b + 20, -68), 30)
        if ix:
            x, y, z = self.pts(ix)
            # nasal cavity: narrow in front, wider behind; septum and turbinates
            xw = np.abs(x) / (0.7 + 0.3 * np.clip((y + g.b + 4) / 30, 0, 1))
            e = sd_ell(xw, y + g.b - 20, z + 68, 11, 24, 14)
            put(ix, aa(e, px), air)
            put(ix, aa(np.abs(x) - 1.0, px) * aa(e, px), g.dip)
            for s in (1, -1):
                for zt in (-62, -72):
                    put(ix, aa(sd_ell(x - s * 8.5, y + g.b - 22, z - zt, 3.5, 17, 3.5), px)
                        * aa(e, px), g.soft)
        ix = self.box((0, -6, -77), 16)
        if ix:
            x, y, z = self.pts(ix)
            put(ix, aa(sd_ell(x, y + 6, z + 77, 13, 8, 8), px), air)
        # sphenoid body with its sinus
        ix = self.box((0, -11, -40), 24)
        if ix:
            x, y, z = self.pts(ix)
            e = sd_ell(x, y + 11, z + 41, 19, 16, 12)
            put(ix, aa(np.maximum(e, -D[ix] + 0.5), px), g.dip + 100)
            if not g.child or g.age > 9:
                s_ = sd_ell(x, y + 12, z + 41, 16.5, 13.5, 9.5)
                put(ix, aa(s_, px), air)
                put(ix, aa(np.abs(x - 2.5) - 0.6, px) * aa(s_, px), g.dip)

    def _skull(self):
        g, px = self.g, self.px
        D, t = self.D, self.tsk
        ti = np.maximum(0.8, 0.28 * t)
        to = np.maximum(1.0, 0.32 * t)
        sh = np.maximum(-D, D - t)
        near = sh < px
        idx = np.flatnonzero(near)
        if idx.size == 0:
            return
        d, tt = D.reshape(-1)[idx], t.reshape(-1)[idx]
        cort = (d < ti.reshape(-1)[idx]) | (d > tt - to.reshape(-1)[idx])
        tex = np.broadcast_to(self.tex2, D.shape).reshape(-1)[idx]
        v = np.where(cort, g.cort, g.dip + 120 * tex)
        v = np.where(tt < 2.0, g.cort * 0.75, v)  # thin plates (orbital roof) are less dense
        self.paint(idx, aa(sh.reshape(-1)[idx], px), v)
        x, y, z = (a.reshape(-1)[idx] for a in (self.X, self.Y, self.Z))
        vault = z > -12
        if vault.any():
            w = 0.5 if not g.child else 1.2
            sd = np.full(idx.size, 99.0, F32)
            for fn, ok in self.sutures():
                sd = np.minimum(sd, np.where(ok(x, y, z), np.abs(fn(x, y, z)), 99.0))
            self.paint(idx, aa(sd - w / 2, px) * vault * aa(sh.reshape(-1)[idx], px), 200.0)
        for f in self.foci:
            if f.kind == "EDH" and f.frac is not None:
                tn, wf = f.frac
                dd = np.abs((x - f.p[0]) * tn[0] + (y - f.p[1]) * tn[1] + (z - f.p[2]) * tn[2])
                r = np.sqrt((x - f.p[0]) ** 2 + (y - f.p[1]) ** 2 + (z - f.p[2]) ** 2)
                self.paint(idx, aa(dd - wf / 2, px) * (r < f.R + 12) * aa(sh.reshape(-1)[idx],
                                                                          px), 40.0)
        if g.fsinus:
            c, r, sx = self.fs
            ix = self.box(c, max(r) + 3)
            if ix:
                x, y, z = self.pts(ix)
                e = sd_ell(x - c[0], y - c[1], z - c[2], *r)
                self.paint(ix, aa(e, px), -1000.0)
                self.paint(ix, aa(np.abs(x - sx) - 0.6, px) * aa(e, px), g.cort * 0.6)
        for s, seg in zip((1, -1), self.pet, strict=True):
            ix = self.box(seg.mean(0), 28)
            if ix:
                x, y, z = self.pts(ix)
                self.paint(ix, aa(sd_tube(x, y, z, seg, PET_R), px), g.pet)
                ie = seg[0] + 0.55 * (seg[1] - seg[0]) + [0, 1.5, -1]
                self.paint(ix, aa(sd_ell(x - ie[0], y - ie[1], z - ie[2], 2.2, 1.6, 2.2), px),
                           g.csf + 20)
        ix = self.box(self.clivus.mean(0), 30)
        if ix:
            x, y, z = self.pts(ix)
            e = sd_tube(x / 2.0, y, z, self.clivus * [0.5, 1, 1], (5.5, 5.5))
            self.paint(ix, aa(e, px), g.cort)
            self.paint(ix, aa(e + 1.5, px), g.dip + 150)
        for s in (1, -1):  # cavernous sinus with the carotid: soft tissue beside the sella
            c = np.array([s * 16, g.tfy - 3, g.tfz + 3])
            ix = self.box(c, 12)
            if ix:
                x, y, z = self.pts(ix)
                self.paint(ix, aa(sd_ell(x - c[0], y - c[1], z - c[2], 5.5, 10, 7), px),
                           g.sinus - 5)
                self.paint(ix, aa(sd_ell(x - c[0], y - c[1] + 2, z - c[2], 2.2, 3, 2.2), px),
                           g.sinus)

    # -- brain --------------------------------------------------------------------------------
    def _brain(self):
        g, px = self.g, self.px
        X, Y, Z, D = self.X, self.Y, self.Z, self.D
        self.Dbr = np.full(D.shape, 9.0, F32)
        inc = D < px
        if not inc.any():
            return
        idx = np.flatnonzero(inc)
        x, y, z = (a.reshape(-1)[idx] for a in (X, Y, Z))
        self._pyf = self.PY.reshape(-1)[idx]
        d = D.reshape(-1)[idx]
        v, bl, code = self.csf(x, y, z, "sub")
        self.paint(idx, aa(d, px), v, bl, code)
        fr = np.clip(-y / g.b, 0, 1)
        dbr = d + g.tcsf * (1 + 0.6 * fr)
        canal = (z < -52) & (np.hypot(x, y - self.ycanal(z)) < g.rfm + 2)
        dbr = np.where(canal, 9.0, dbr)
        m = dbr < px
        self.Dbr.reshape(-1)[idx] = dbr
        idx, x, y, z, dbr = idx[m], x[m], y[m], z[m], dbr[m]
        self._pyf = self.PY.reshape(-1)[idx]
        depth = -dbr
        wi = aa(z - self.tent(x, y), px) * aa(self.ypet(x) - y, px) * (~self.notch(x, y))
        band = (depth < g.suld + g.tctx + 1.5) & (wi < 0.99)
        dist = depth.copy()
        ds = np.full(depth.shape, 99.0, F32)
        tex = self.sample(self.tex, x, y, z)
        if band.any():
            # sample the level set with radial distances compressed, so sulci run radially
            xb, yb, zb = x[band], y[band], z[band]
            r = np.sqrt(xb * xb + yb * yb + zb * zb) + 1e-3
            f = (60 + 0.6 * (r - 60)) / r
            S = self.sample(self.sulc, xb * f, yb * f, zb * f) / f
            db = depth[band]
            ws = g.sulw * (1 - 0.6 * np.clip(db / g.suld, 0, 1)) * np.clip(
                1 + 0.45 * tex[band], 0.3, 2.0) + 0.25
            ds[band] = np.maximum(np.abs(S) - ws / 2, db - g.suld)
            dist = np.minimum(dist, ds)
        cer = g.wm + (g.gm - g.wm) * aa(dist - g.tctx, px) + 1.2 * tex
        cb = wi > 0
        val = cer
        if cb.any():
            xc, yc, zc = x[cb], y[cb], z[cb]
            sgn = np.where(xc >= 0, 1, -1)
            rho = np.sqrt((xc - sgn * 22) ** 2 + (yc - g.pfy) ** 2 + (zc - g.pfz - 2) ** 2)
            fol = np.cos(2 * math.pi * rho / 3.6 + 2.5 * tex[cb])
            cleft = np.clip((fol - 0.55) / 0.45, 0, 1) * (0.3 + 0.4 * g.atro)
            cbv = g.gm - 1 - (g.gm - g.csf) * cleft
            cbv = cbv + (g.wm + 1 - cbv) * sstep(14, 8, rho)
            cbv = np.where(np.abs(xc) < 1.2 + g.atro, np.where((zc < g.pfz - 8) & (yc > g.pfy),
                                                                g.csf, cbv), cbv)
            val = cer.copy()
            val[cb] = cer[cb] + (cbv - cer[cb]) * wi[cb]
        self.paint(idx, aa(dbr, px), val)
        if band.any():
            bi = np.flatnonzero(band)
            self._pyf = self._pyf[bi]
            v, bl, code = self.csf(x[bi], y[bi], z[bi], "sub")
            self.paint(idx[bi], aa(ds[bi], px) * (1 - wi[bi]), v, bl, code)

    def _sub_csf(self, ix, d, extra=1.0):
        """Paint subarachnoid CSF (SAH-aware) on a slice patch."""
        x, y, z = self.pts(ix)
        self._pyf = self.PY[ix]
        v, bl, code = self.csf(x, y, z, "sub")
        self.paint(ix, aa(d, self.px) * extra, v, bl, code)

    def _deep(self):
        g, px = self.g, self.px
        for s in (1, -1):
            # Sylvian fissure and insula
            ix = self.box((s * 45, -8, -6), 40)
            if ix:
                x, y, z = self.pts(ix)
                dl = np.minimum(seg2(x, y, (s * (g.a + 3), -20), (s * 37, -4)),
                                seg2(x, y, (s * 35, -28), (s * 35, 14))) + 1.2 * self.tex3[ix]
                dz = np.maximum(z - 10, -24 - z)
                sh = np.maximum(dl - g.sylw / 2, dz)
                inb = aa(self.Dbr[ix], px)
                self.paint(ix, aa(sh - g.tctx, px) * inb, g.gm)
                self._sub_csf(ix, sh, aa(self.D[ix], px))
            # deep grey nuclei
            for c, r in self.caud[:1] if s > 0 else self.caud[1:]:
                ix = self.box(c, 10)
                if ix:
                    x, y, z = self.pts(ix)
                    self.paint(ix, aa(sd_ell(x - c[0], y - c[1], z - c[2], *r), px), g.deep)
            c = (s * 24, -4, 0)
            ix = self.box(c, 17)
            if ix:
                x, y, z = self.pts(ix)
                xr, yr = rotz(x - c[0], y - c[1], s * 0.26)
                self.paint(ix, aa(sd_ell(xr, yr, z - c[2], 6, 15, 8.5), px), g.deep)
                self.paint(ix, aa(sd_ell(xr + 4, yr, z - c[2], 2.5, 9, 6), px), g.deep - 2)
            c = (s * 10, 9, 3)
            ix = self.box(c, 13)
            if ix:
                x, y, z = self.pts(ix)
                self.paint(ix, aa(sd_ell(x - c[0], y - c[1], z - c[2], 7, 12, 8), px), g.deep)
        # interhemispheric fissure
        self._sheet_x(g.ihw / 2, lambda x, y, z: self.zih(y) - z, "ih")
        # ventricles
        for side, zs, pts, rad in self.vents:
            p3 = pts * [1, 1, zs]
            c = p3.mean(0)
            ix = self.box(c, np.max(np.linalg.norm(p3 - c, axis=1) + rad * max(zs, 1)) + 2)
            if not ix:
                continue
            x, y, z = self.pts(ix)
            dv = sd_tube(x, y, z / zs, pts, rad) * min(1.0, zs)
            dv = np.maximum(dv, g.sep / 2 - side * x)
            c, r = self.caud[0 if side > 0 else 1]
            dv = np.maximum(dv, -sd_ell(x - c[0], y - c[1], z - c[2], *r))
            self._pyf = self.PY[ix]
            v, bl, code = self.csf(x, y, z, "lat+" if side > 0 else "lat-")
            self.paint(ix, aa(dv, px), v, bl, code)
        V = g.vent
        for c, r, name in (((0, -1, -1), (1.2 + 2.5 * max(V - 0.7, 0), 11, 8), "v3"),
                           ((0, 29, -35), (6 * V ** 0.5, 4 * V ** 0.5, 8), "v4")):
            ix = self.box(c, 14)
            if ix:
                x, y, z = self.pts(ix)
                self._pyf = self.PY[ix]
                v, bl, code = self.csf(x, y, z, name)
                self.paint(ix, aa(sd_ell(x - c[0], y - c[1], z - c[2], *r), px), v, bl, code)
        xs = 1 + 0.25 * (V - 1)
        for s in (1, -1):
            c = (s * 21.5 * xs, 28, 11)
            ix = self.box(c, 7)
            if ix:
                x, y, z = self.pts(ix)
                self.paint(ix, aa(sd_ell(x - c[0], y - c[1], z - c[2], 3.5, 5, 3), px),
                           g.choroid)
        c = self.pineal
        ix = self.box(c, 6)
        if ix:
            x, y, z = self.pts(ix)
            self.paint(ix, aa(sd_ell(x - c[0], y - c[1], z - c[2], 3.5, 4, 3), px), g.gm - 2)
        # brainstem and cisterns
        a = g.atro
        ix = self.box((0, 10, -35), 45)
        if ix:
            x, y, z = self.pts(ix)
            mid = sd_ell(x, y - 8, z + 10, 12, 10, 11)
            pons = sd_ell(x, y - 15, z + 33, 14, 12, 12)
            med = sd_tube(x, y, z, np.array([[0, 17, -44], [0, 21, -62], [0, 24, -100]]),
                          (8.5, 7.0, 6.0))
            bs = np.minimum(np.minimum(mid, pons), med)
            inb = aa(self.D[ix], px)
            self._sub_csf(ix, np.maximum(pons - 2 - 2 * a, y - 15), inb)  # prepontine
            self._sub_csf(ix, np.maximum(mid - 1.5 - 3 * a, -y), inb)  # ambient
            self.paint(ix, aa(bs, px) * inb, g.wm + 3)
            self._sub_csf(ix, sd_ell(x, y + 1, z + 13, 3, 4, 5), inb)
            self._sub_csf(ix, sd_ell(x, y - 20, z + 2, 8, 3.5 + 2 * a, 5), inb)
            self._sub_csf(ix, sd_ell(x, y - g.pfy - 18, z + 57, 9, 10, 8) - 2 * a, inb)
            r = np.hypot(x, y + 9)
            th = np.arctan2(y + 9, x)
            star = (r - (8 + 3 * a) * (1 + 0.3 * np.cos(5 * th + 1.57))) * 0.8
            self._sub_csf(ix, np.maximum(star, np.abs(z + 17) - 4.5), inb)

    def _sheet_x(self, half, below, what):
        """Midline sheet |x| < half above a floor surface, inside the cavity."""
        px = self.px
        m = np.abs(self.X) < half + 2 * px
        if not m.any():
            return
        idx = np.flatnonzero(m)
        x, y, z = (a.reshape(-1)[idx] for a in (self.X, self.Y, self.Z))
        d = self.D.reshape(-1)[idx]
        sh = np.maximum(np.abs(x) - half, below(x, y, z))
        if what == "ih":
            self._pyf = self.PY.reshape(-1)[idx]
            v, bl, code = self.csf(x, y, z, "sub")
            self.paint(idx, aa(sh, px) * aa(d, px), v, bl, code)
        else:
            self.paint(idx, aa(sh, px) * aa(d, px), what)

    def _dura(self):
        g, px = self.g, self.px
        # tentorium: a thin dense sheet with CSF either side
        tt = 1.1
        X, Y, Z = self.X, self.Y, self.Z
        dt = np.abs(Z - self.tent(X, Y))
        m = (dt < tt + 2 * px) & (self.D < px)
        if m.any():
            idx = np.flatnonzero(m)
            x, y = X.reshape(-1)[idx], Y.reshape(-1)[idx]
            ok = (y > self.ypet(x) - 1) & ~self.notch(x, y)
            a = aa(self.D.reshape(-1)[idx], px) * ok
            dd = dt.reshape(-1)[idx]
            self.paint(idx, aa(dd - tt / 2 - 0.6, px) * a, g.csf)
            self.paint(idx, aa(dd - tt / 2, px) * a, g.tent)
        tf = 1.0 + 1.2 * ("dense_falx" in self.mimics)

        def falx_floor(x, y, z):
            return np.where(y < g.yap, self.zfalx(y), self.tent(x, y)) - z

        self._sheet_x(tf / 2, falx_floor, g.falx)
        # superior sagittal sinus: triangle against the inner table
        m = (np.abs(X) < 7) & (self.D < px) & (self.D > -9)
        if m.any():
            idx = np.flatnonzero(m)
            x, y, z = (a.reshape(-1)[idx] for a in (X, Y, Z))
            q = -self.D.reshape(-1)[idx]
            w0 = 1.5 + 3.5 * np.clip((y + 0.7 * g.b) / (1.5 * g.b), 0, 1)
            h = 2 + 1.6 * w0
            ok = (z > g.ztorc + 2) & ((y > -0.5 * g.b) | (z > g.zaf + 25))
            ok &= (z > self.zfalx(y) + 4) | (y > g.yap)
            sd = np.maximum(np.abs(x) - w0 * (1 - q / h), q - h)
            self.paint(idx, aa(sd, px) * aa(-q, px) * ok, g.sinus)
        for pts, rad in self.sinuses:
            ix = self.box(pts.mean(0), np.max(np.linalg.norm(pts - pts.mean(0), axis=1)) + 6)
            if ix:
                x, y, z = self.pts(ix)
                self.paint(ix, aa(sd_tube(x, y, z, pts, rad), px) * aa(self.D[ix], px), g.sinus)
        c = self.torc
        ix = self.box(c, 8)
        if ix:
            x, y, z = self.pts(ix)
            self.paint(ix, aa(sd_ell(x - c[0], y - c[1], z - c[2], 6, 4, 5), px)
                       * aa(self.D[ix], px), g.sinus)
        for c, r, hu in self.calcs:
            ix = self.box(c, max(r) + 2)
            if ix:
                x, y, z = self.pts(ix)
                self.paint(ix, aa(sd_ell(x - c[0], y - c[1], z - c[2], *r), px), hu)
        for c, r, hu in self.plaques:
            ix = self.box(c, r + 3)
            if ix:
                x, y, z = self.pts(ix)
                rr = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) - r
                self.paint(ix, aa(np.maximum(rr, np.abs(self.D[ix] + 0.8) - 0.8), px), hu)

    # -- hemorrhage painting ------------------------------------------------------------------
    def _lens_common(self, f, ix):
        x, y, z = self.pts(ix)
        ux, uy, uz = x - f.p[0], y - f.p[1], z - f.p[2]
        un = ux * f.n[0] + uy * f.n[1] + uz * f.n[2]
        tang = np.sqrt(np.maximum(ux * ux + uy * uy + uz * uz - un * un, 0))
        return x, y, z, tang

    def _paint_edh(self, f):
        ix = self.box(f.p, f.R + f.h + 3)
        if not ix:
            return
        px = self.px
        x, y, z, tang = self._lens_common(f, ix)
        D = self.D[ix]
        d = -D - f.h * (1 - (tang / f.R) ** 2)
        a = aa(d, px) * aa(D, px)
        for fn, sg in f.sut:
            a = a * aa(-sg * fn(x, y, z) + 0.5, px)
        v = f.hu
        if f.swirl:
            v = f.hu - 25 * np.clip(self.sample(self.tex, x * 2, y * 2, z * 2) - 0.8, 0, 1)
        self.paint(ix, a, v, 1.0, f.code)

    def _paint_sdh(self, f):
        g, px = self.g, self.px
        if f.sub == "convexity":
            ix = self.box(f.p, f.R + 6)
            if not ix:
                return
            x, y, z, tang = self._lens_common(f, ix)
            D = self.D[ix]
            hh = f.h * np.sqrt(np.clip(1 - (tang / f.R) ** 2, 0, 1))
            d = np.maximum(-D - hh, -hh + 0.3)
            a = aa(d, px) * aa(D, px) * aa(g.ihw / 2 + 0.6 - f.side * x, px)
            wi = aa(z - self.tent(x, y), px) * aa(self.ypet(x) - y, px)
            # along the vault only, not around the clivus or petrous apex
            a = a * (1 - wi) * sstep(28, 38, np.hypot(x, y - 5))
        elif f.sub == "falx":
            ix = self.box(f.p, f.R + 4)
            if not ix:
                return
            x, y, z = self.pts(ix)
            rho = np.hypot(y - f.p[1], z - f.p[2])
            hh = f.h * np.sqrt(np.clip(1 - (rho / f.R) ** 2, 0, 1))
            q = f.side * x - 0.7
            d = np.maximum(np.maximum(-q, q - hh), -hh + 0.3)
            a = aa(d, px) * aa(self.D[ix], px) * aa(self.zfalx(y) - 2 - z, px)
        else:
            ix = self.box(f.p, f.R + 4)
            if not ix:
                return
            x, y, z = self.pts(ix)
            rho = np.hypot(x - f.p[0], y - f.p[1])
            hh = f.h * np.sqrt(np.clip(1 - (rho / f.R) ** 2, 0, 1))
            q = z - self.tent(x, y) - 0.6
            d = np.maximum(np.maximum(-q, q - hh), -hh + 0.3)
            a = aa(d, px) * aa(self.D[ix], px) * aa(1.0 - f.side * x, px)
        v = f.hu
        if f.dens == "mixed":
            py = self.PY[ix]
            v = np.where(py > f.pat_y - (f.level - 0.5) * 2 * f.R * self.g.size, f.hu2, f.hu)
        elif f.dens == "hyper":
            v = f.hu + 15 * np.clip(self.sample(self.tex, *self.pts(ix)), -1, 1)
        self.paint(ix, a, v, 1.0, f.code)

    def _paint_sah(self, f):
        pass  # painted through csf() wherever subarachnoid CSF is drawn

    def _paint_ivh(self, f):
        pass  # painted through csf() in the ventricles

    def _paint_iph(self, f):
        ix = self.box(f.c, f.rad)
        if not ix:
            return
        px, g = self.px, self.g
        x, y, z = self.pts(ix)
        d = None
        for c, r, ang in f.lobes:
            xr, yr = rotz(x - c[0], y - c[1], ang)
            e = sd_ell(xr, yr, z - c[2], *r)
            d = e if d is None else np.minimum(d, e)
        tx = self.sample(self.tex, x * 1.7, y * 1.7, z * 1.7)
        d = d + f.rough * tx
        brain = aa(self.Dbr[ix], px)
        self.paint(ix, aa(d - f.edema, px) * brain * 0.85, g.wm - 7)
        v = f.hu + 3 * tx
        if f.sub == "contusion":
            v = v - 10 * np.clip(tx, 0, 1)
        if f.level:
            v = v + 8 * (self.PY[ix] > self.to_patient(f.c)[1])
        self.paint(ix, aa(d, px) * brain, v, 1.0, f.code)

    # -- backgrounds and post-processing ------------------------------------------------------
    def bg(self, k):
        n = self.matrix
        if not hasattr(self, "_bg"):
            ax = self.x0 + self.d * np.arange(n)
            xx, yy = np.meshgrid(ax, ax)
            r = np.hypot(xx - self.hold_c[0], yy - self.hold_c[1])
            post = (yy - self.hold_c[1]) > 0.45 * r
            img = np.full((n, n), -1000.0, F32)
            pad = (r > self.hold_r) & (r < self.hold_r + self.pad_t) & post
            shell = (r >= self.hold_r + self.pad_t) & (r < self.hold_r + self.pad_t + 3) & post
            img[pad] = self.pad_hu
            img[shell] = self.shell_hu
            self._bg = (np.full((n, n), -1000.0, F32), img)
        return self._bg[1] if self.z[k] < self.hold_top else self._bg[0]

    def tex2d(self, k):
        """2-D textures, fine (trabecular bone) and coarse (air cells, fat planes): one pair per
        study, shifted with z so thin neighbouring slices stay alike and thick ones differ."""
        if not hasattr(self, "_tex2"):
            out = []
            for sig in (1.0, 2.2):
                w = self.rng.standard_normal((self.matrix, self.matrix)).astype(F32)
                t = ndimage.gaussian_filter(w, sig / self.d, mode="wrap")
                out.append(t / (t.std() + 1e-6))
            self._tex2 = np.stack(out)
        sh = int((self.z[k] - self.z[0]) / (3.0 * self.d))
        return np.roll(self._tex2, (sh, 2 * sh), (1, 2))

    def noise_field(self):
        n = self.matrix
        if not hasattr(self, "_H"):
            fy = np.fft.fftfreq(n, self.d)[:, None]
            fx = np.fft.rfftfreq(n, self.d)[None, :]
            f = np.hypot(fx, fy)
            H = np.sqrt(f) * np.exp(-((f / self.fc) ** 2))
            wgt = np.full(H.shape, 2.0)
            wgt[:, 0] = 1
            if n % 2 == 0:
                wgt[:, -1] = 1
            self._H = (H / math.sqrt((wgt * H * H).sum() / (n * n))).astype(F32)
        w = self.rng.standard_normal((n, n)).astype(F32)
        return np.fft.irfft2(np.fft.rfft2(w) * self._H, s=(n, n)).astype(F32)

    def post(self, k, img):
        """Scanner effects on one slice (HU image, full matrix)."""
        g, n, d = self.g, self.matrix, self.d
        img = ndimage.gaussian_filter(img, self.blur / d, truncate=3.0)
        if not hasattr(self, "_grid2"):
            ax = (self.x0 + d * np.arange(n)).astype(F32)
            xx, yy = np.meshgrid(ax, ax)
            hc = self.Ch
            r2 = ((xx - hc[0]) ** 2 + (yy - hc[1]) ** 2) / (80 * g.size) ** 2
            self._grid2 = (xx, yy, (self.cup * np.clip(1 - r2, 0, 1)).astype(F32),
                           np.hypot(xx, yy))
        xx, yy, cup, ri = self._grid2
        zc = self.z[k]
        tissue = (img > -150) & (img < 250)
        img -= cup * tissue
        # beam hardening between the petrous bones
        ends = []
        for seg in self.pet:
            P = np.array([self.to_patient(seg[0] + t * (seg[1] - seg[0]))
                          for t in np.linspace(0, 1, 12)])
            j = np.argmin(np.abs(P[:, 2] - zc))
            if abs(P[j, 2] - zc) < 7.5 * g.size + self.thk / 2:
                ends.append(P[j, :2])
        sdf = 1.0
        if len(ends) == 2:
            a, b = ends
            dist = seg2(xx, yy, a, b)
            wid = self.rng.uniform(5, 11)
            img -= self.streak * np.exp(-0.5 * (dist / wid) ** 2) * tissue
            for _ in range(int(self.rng.integers(2, 7))):
                c = (a if self.rng.random() < 0.5 else b) + self.rng.normal(0, 4, 2)
                th = self.rng.uniform(0, math.pi)
                dl = np.abs((xx - c[0]) * math.sin(th) - (yy - c[1]) * math.cos(th))
                amp = self.rng.choice([-1, 1]) * self.streak * self.rng.uniform(0.5, 1.5)
                img += amp * np.exp(-0.5 * (dl / 0.6) ** 2) * tissue * np.exp(
                    -np.hypot(xx - c[0], yy - c[1]) / 60)
            sdf = 1.25
        if self.motion and self.motion[0] <= k < self.motion[1]:
            _, _, sh, ang, wgt = self.motion
            dy, dx = round(sh * math.sin(ang)), round(sh * math.cos(ang))
            img = (1 - wgt) * img + wgt * np.roll(img, (dy, dx), (0, 1))
        if self.ring_r is not None:
            img += self.ring_a * np.exp(-0.5 * ((ri - self.ring_r) / (0.7 * d)) ** 2)
        img += self.noise_sd * sdf * self.noise_field()
        return img, ri > self.fov / 2

    # -- run ----------------------------------------------------------------------------------
    def run(self):
        n, nz = self.matrix, len(self.z)
        st = self.site
        vol = np.empty((nz, n, n), F32)
        lab = np.zeros((nz, n, n), np.uint8)
        lo_st = -(1 << (st.bits - 1)) if st.signed else 0
        hi_st = (1 << (st.bits - 1)) - 1 if st.signed else (1 << st.bits) - 1
        lo = max(st.low_hu, lo_st * st.slope + st.intercept)
        hi = hi_st * st.slope + st.intercept
        pad_hu = st.outside * st.slope + st.intercept
        for k in range(nz):
            full = self.bg(k).copy()
            if self.boxes[k] is not None:
                hu, F, T = self.render_slab(k)
                r0, r1, c0, c1 = self.boxes[k]
                full[r0:r1, c0:c1] = hu
                if F is not None:
                    lab[k, r0:r1, c0:c1] = np.where(F >= 0.5, T, 0)
            img, outside = self.post(k, full)
            img = np.clip(img, lo, hi)
            img[outside] = pad_hu
            vol[k] = img
        self.hu, self.label = vol, lab
        self.stored = np.round((vol - st.intercept) / st.slope).astype(np.int32)
        return self


# ------------------------------------------------------------------------------------------------
# study assembly and DICOM output


def render_study(seed, index, matrix=256, n_sites=5, positive_rate=0.4):
    """Render one study; returns the Phantom with .hu (float HU), .stored, .label, .z."""
    boost = 1.0
    for _ in range(3):
        ph = Phantom(seed, index, matrix, n_sites, positive_rate, boost).run()
        if not ph.positive or ph.label.any():
            return ph
        boost *= 4.0  # a focus lost to partial volume: make it bigger, same study otherwise
    return ph


def _ds_num(v):
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def study_meta(ph):
    rng = np.random.default_rng(int(hexid("meta", ph.seed, ph.index, n=16), 16))
    day = int(rng.integers(0, 6 * 365))
    date = np.datetime64("2019-01-01") + np.timedelta64(day, "D")
    secs = int(rng.integers(0, 86400))
    return NS(
        study_uid=uid("rp", ph.seed, ph.index, "study"),
        series_uid=uid("rp", ph.seed, ph.index, "axial"),
        scout_uid=uid("rp", ph.seed, ph.index, "scout"),
        frame_uid=uid("rp", ph.seed, ph.index, "frame"),
        date=str(date).replace("-", ""),
        time=f"{secs // 3600:02d}{secs % 3600 // 60:02d}{secs % 60:02d}",
        accession=f"{int(rng.integers(10 ** 7, 10 ** 8))}",
        pid=f"RP{int(rng.integers(10 ** 7, 10 ** 8))}",
        name=f"PHANTOM^RADIOLOGY{ph.index}",
        station=f"{ph.site.name[:4]}CT{int(rng.integers(1, 4))}",
    )


def _base(ph, meta, series_uid, number, desc, image_type):
    st = ph.site
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = image_type
    ds.SOPClassUID = CT_IMAGE
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = meta.date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = meta.time
    ds.AccessionNumber = meta.accession
    ds.Modality = "CT"
    ds.Manufacturer = st.manufacturer
    ds.InstitutionName = st.name
    ds.ReferringPhysicianName = ""
    ds.StationName = meta.station
    ds.StudyDescription = st.study_desc
    ds.SeriesDescription = desc
    ds.ManufacturerModelName = ph.model
    ds.PatientName = meta.name
    ds.PatientID = meta.pid
    ds.PatientBirthDate = ""
    ds.PatientSex = ph.g.sex
    ds.PatientAge = f"{int(ph.g.age):03d}Y"
    ds.BodyPartExamined = "HEAD"
    ds.KVP = _ds_num(ph.kvp)
    ds.SoftwareVersions = "RP-1"
    ds.ReconstructionDiameter = _ds_num(ph.fov)
    ds.DataCollectionDiameter = "500"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = _ds_num(150 - ph.Ch[1])
    ds.RotationDirection = "CW"
    ds.XRayTubeCurrent = ph.ma
    ds.ExposureTime = 1000
    ds.Exposure = ph.ma
    ds.ConvolutionKernel = ph.kernel
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = meta.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = meta.accession[-6:]
    ds.SeriesNumber = number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = meta.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    return ds


def _write(ds, path, implicit):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _name(ph, meta, series_no, inst, sop):
    st = ph.site
    if st.naming == "ge":
        return f"{meta.accession}/{series_no}/CT.{hexid(sop, n=10)}.dcm"
    if st.naming == "siemens":
        return f"{meta.pid}/{meta.pid}.CT.HEAD.{series_no:04d}.{inst:04d}.IMA"
    if st.naming == "philips":
        return f"DICOM/{hexid(meta.study_uid, n=8)}/{hexid(meta.series_uid, series_no, n=8)}/" \
               f"IM_{inst:04d}"
    if st.naming == "toshiba":
        return f"{hexid(meta.study_uid, n=6)}/{hexid(sop, n=16)}"
    return f"{hexid(meta.study_uid, n=8)}/{sop}.dcm"


def write_study(ph, out: Path):
    st = ph.site
    meta = study_meta(ph)
    root = out / st.name
    nz = len(ph.z)
    dt = np.int16 if st.signed else np.uint16
    files = []
    desc = f"Brain {ph.thk:g}mm" if st.naming != "siemens" else f"Head {ph.thk:g} {ph.kernel}"
    for k in range(nz):
        inst = nz - k if st.descending else k + 1
        ds = _base(ph, meta, meta.series_uid, 2, desc, ["ORIGINAL", "PRIMARY", "AXIAL"])
        sop = uid("rp", ph.seed, ph.index, "axial", k)
        ds.SOPInstanceUID = sop
        ds.InstanceNumber = inst
        ds.SliceThickness = _ds_num(ph.thk)
        ds.ImagePositionPatient = [_ds_num(ph.x0), _ds_num(ph.y0), _ds_num(ph.z[k])]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = _ds_num(ph.z[k])
        ds.Rows = ds.Columns = ph.matrix
        ds.PixelSpacing = [_ds_num(ph.d), _ds_num(ph.d)]
        ds.BitsStored = st.bits
        ds.HighBit = st.bits - 1
        ds.PixelRepresentation = int(st.signed)
        if st.padding is not None:
            ds.add_new(0x00280120, "SS" if st.signed else "US", st.padding)
        ds.WindowCenter = "40"
        ds.WindowWidth = "80"
        ds.RescaleIntercept = _ds_num(st.intercept)
        ds.RescaleSlope = _ds_num(st.slope)
        ds.RescaleType = "HU"
        ds.add_new(0x7FE00010, "OW", ph.stored[k].astype(dt).tobytes())
        path = root / _name(ph, meta, 2, inst, sop)
        _write(ds, path, st.implicit)
        files.append(path)
    if ph.rng_loc < st.p_localizer:
        files.append(write_localizer(ph, meta, root))
    return meta, files


def write_localizer(ph, meta, root):
    """Lateral projection through the axial volume (a stand-in topogram)."""
    st = ph.site
    mu = np.clip(ph.hu + 1000.0, 0, None).sum(2) * ph.d / 1000.0  # (z, y) water-equivalent mm
    f = max(1, round(ph.thk / ph.d))
    img = np.repeat(mu[::-1], f, axis=0)
    img = np.clip(img / max(img.max(), 1e-6) * 3000, 0, 4095).astype(np.uint16)
    ds = _base(ph, meta, meta.scout_uid, 1, "Topogram 0.6 T20s" if st.naming == "siemens"
               else "Scout", ["ORIGINAL", "PRIMARY", "LOCALIZER"])
    sop = uid("rp", ph.seed, ph.index, "scout")
    ds.SOPInstanceUID = sop
    ds.InstanceNumber = 1
    ds.SliceThickness = "1"
    top = ph.z[-1] + ph.thk / 2
    ds.ImagePositionPatient = [_ds_num(ph.Ch[0]), _ds_num(ph.y0), _ds_num(top)]
    ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
    ds.Rows, ds.Columns = img.shape
    ds.PixelSpacing = [_ds_num(ph.thk / f), _ds_num(ph.d)]
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "1500"
    ds.WindowWidth = "3000"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.add_new(0x7FE00010, "OW", img.tobytes())
    path = root / _name(ph, meta, 1, 1, sop)
    _write(ds, path, st.implicit)
    return path


def save_npz(path, **arrays):
    """np.savez_compressed with fixed zip timestamps, so reruns give identical bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def _job(args):
    seed, index, matrix, n_sites, prate, out, want_sheet = args
    t0 = time.process_time()
    ph = render_study(seed, index, matrix, n_sites, prate)
    meta, _ = write_study(ph, Path(out))
    lab = ph.label
    (Path(out) / "masks").mkdir(exist_ok=True)
    save_npz(Path(out) / "masks" / f"{meta.study_uid}.npz", label=lab,
             z=ph.z.astype(np.float64))
    vox = ph.d * ph.d * ph.thk / 1000.0
    present = [n for n in SUBTYPES if (lab == CODE[n]).any()]
    ich = int(bool(present))
    row = [meta.study_uid, ph.site.name, ich, ";".join(present),
           f"{float((lab > 0).sum()) * vox:.4f}", meta.series_uid]
    extra = [meta.study_uid, ";".join(sorted(ph.mimics)), f"{ph.thk:g}", ph.matrix,
             f"{ph.noise_sd:.2f}"]
    sheet = None
    if want_sheet and index < 64:
        g = ph.g
        if ich:
            k = int(np.argmax((lab > 0).sum((1, 2))))
            sheet = ("pos", ph.hu[k].astype(np.int16), lab[k])
        else:
            zs = [ph.to_patient((0, 0, 0.62 * g.cu))[2], ph.to_patient((0, 30, -38))[2]]
            ks = [int(np.argmin(np.abs(ph.z - z))) for z in zs]
            sheet = ("neg", [ph.hu[k].astype(np.int16) for k in ks])
    return row, extra, sheet, time.process_time() - t0


# ------------------------------------------------------------------------------------------------
# contact sheet


def write_png(path, rgb):
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(
            ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)


def _win(hu, size):
    g = np.clip((hu.astype(F32) - 0) / 80.0 * 255, 0, 255).astype(np.uint8)
    if g.shape[0] != size:
        g = g[:: g.shape[0] // size, :: g.shape[1] // size][:size, :size]
    return np.repeat(g[:, :, None], 3, 2)


def make_sheet(path, sheets, size=256):
    tiles = []
    pos = [s for s in sheets if s and s[0] == "pos"][:4]
    neg = [s for s in sheets if s and s[0] == "neg"][:2]
    for _, hu, lab in pos:
        plain = _win(hu, size)
        m = lab > 0
        if m.shape[0] != size:
            m = m[:: m.shape[0] // size, :: m.shape[1] // size][:size, :size]
        edge = m & ~ndimage.binary_erosion(m)
        out = plain.copy()
        out[edge] = (255, 40, 40)
        tiles += [plain, out]
    for _, pair in neg:
        tiles += [_win(h, size) for h in pair]
    if not tiles:
        tiles = [np.zeros((size, size, 3), np.uint8)]
    cols = 4
    rows = math.ceil(len(tiles) / cols)
    sheet = np.zeros((rows * size, cols * size, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * size:(r + 1) * size, c * size:(c + 1) * size] = t
    write_png(path, sheet)


# ------------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--studies", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--matrix", type=int, choices=(256, 512), default=256)
    ap.add_argument("--sites", type=int, choices=range(1, 6), default=5)
    ap.add_argument("--positive-rate", type=float, default=0.4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--sheet")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(a.seed, i, a.matrix, a.sites, a.positive_rate, str(out), bool(a.sheet))
             for i in range(a.studies)]
    t0 = time.time()
    if a.workers > 1:
        with mp.get_context("fork").Pool(a.workers) as pool:
            res = list(pool.imap(_job, tasks, chunksize=1))
    else:
        res = [_job(t) for t in tasks]
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["study_uid", "site", "ich", "subtypes", "volume_ml", "series_uid"])
        w.writerows(r[0] for r in res)
    with open(out / "extras.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["study_uid", "mimics", "thickness_mm", "matrix", "noise_sd"])
        w.writerows(r[1] for r in res)
    if a.sheet:
        make_sheet(a.sheet, [r[2] for r in res])
    cpu = [r[3] for r in res]
    print(f"{len(res)} studies in {time.time() - t0:.1f} s wall, "
          f"{np.mean(cpu):.2f} s cpu/study (max {np.max(cpu):.2f}), "
          f"{sum(int(r[0][2]) for r in res)} positive", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
