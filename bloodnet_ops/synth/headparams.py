"""Per-study head parameters and the landmark geometry that several modules share.

Head coordinates (u, v, w) in mm: +u patient left, +v posterior, +w superior (see :mod:`.geometry`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bloodnet_ops.synth.shapes import smoothstep


@dataclass(frozen=True)
class AnatomyParams:
    """Per-study shape and density parameters (mm, HU)."""

    a: float  #: inner-table semi-axis, left-right
    b: float  #: inner-table semi-axis, antero-posterior
    c: float  #: inner-table semi-axis, up from the origin
    c_low: float  #: semi-axis down from the origin (the vault continues below the skull base)
    egg: float  #: widening towards the occiput
    skull_t: float  #: skull thickness over the convexity
    cortical_hu: float  #: inner/outer tables
    diploe_hu: float
    scalp_t: float
    fat_frac: float  #: fraction of the scalp that is subcutaneous fat
    temporalis: float  #: extra thickness of the temporalis muscle
    atrophy: float  #: 0 (young) .. 1 (old): wider sulci, larger ventricles
    gm_hu: float
    wm_hu: float
    csf_hu: float
    deep_gm_hu: float
    venous_hu: float  #: dural sinuses; 40-55 normal, 60-75 a "dense sinus" mimic
    falx_hu: float
    sulcal_corr: float  #: correlation length of the gyral pattern
    sulcal_depth: float
    cortex_t: float
    vent_scale: float
    vent_asym: float  #: right/left ventricle size ratio
    ant_floor: float  #: w of the anterior cranial fossa floor (orbital roofs)
    mid_floor: float  #: w of the middle fossa floor, laterally
    post_floor: float  #: w of the posterior fossa floor
    frontal_sinus: float  #: 0 (none) .. 1 (large)
    mastoid: float  #: 0 (sclerotic) .. 1 (well pneumatised)
    midline_shift: float = 0.0  #: mm towards +u (patient left) of the midline structures
    shift_w: float = 20.0  #: level (w) of the largest shift

    @property
    def scale(self) -> float:
        """Head size relative to an average adult (inner AP semi-axis 84 mm)."""
        return self.b / 84.0


def sample_anatomy(rng: np.random.Generator) -> AnatomyParams:
    """Draw one adult head."""
    b = rng.uniform(78.0, 88.0)
    atrophy = float(np.clip(rng.beta(1.4, 4.0) * 1.3, 0, 1))
    gm = rng.uniform(34.0, 42.0)
    return AnatomyParams(
        a=b * rng.uniform(0.76, 0.86),
        b=b,
        c=b * rng.uniform(0.86, 0.96),
        c_low=b * rng.uniform(1.25, 1.5),
        egg=rng.uniform(0.0, 0.09),
        skull_t=rng.uniform(5.0, 8.0),
        cortical_hu=rng.uniform(1500.0, 1950.0),
        diploe_hu=rng.uniform(350.0, 750.0),
        scalp_t=rng.uniform(3.5, 7.0),
        fat_frac=rng.uniform(0.15, 0.5),
        temporalis=rng.uniform(3.0, 11.0),
        atrophy=atrophy,
        gm_hu=gm,
        wm_hu=gm - rng.uniform(6.5, 12.0),
        csf_hu=rng.uniform(2.0, 12.0),
        deep_gm_hu=gm - rng.uniform(0.0, 4.0),
        venous_hu=rng.uniform(40.0, 55.0),
        falx_hu=rng.uniform(45.0, 95.0),
        sulcal_corr=rng.uniform(4.0, 5.5),
        sulcal_depth=rng.uniform(12.0, 20.0),
        cortex_t=rng.uniform(2.3, 3.4),
        vent_scale=0.8 + 0.9 * atrophy * rng.uniform(0.6, 1.0),
        vent_asym=rng.uniform(0.85, 1.15),
        ant_floor=rng.uniform(-22.0, -14.0),
        mid_floor=rng.uniform(-47.0, -39.0),
        post_floor=rng.uniform(-62.0, -55.0),
        frontal_sinus=float(rng.uniform(0, 1) if rng.random() < 0.8 else 0.0),
        mastoid=rng.uniform(0.2, 1.0),
    )


def falx_bottom(v: np.ndarray, p: AnatomyParams) -> np.ndarray:
    """w of the free edge of the falx: above the corpus callosum in the middle, low at the poles."""
    s = p.scale
    t = smoothstep((np.abs(v) - 0.5 * p.b) / 5.0)
    return (32.0 * s) - (75.0 * s) * t


def midline_u(w: np.ndarray, p: AnatomyParams) -> np.ndarray | float:
    """u of the (possibly shifted) midline at level w."""
    if abs(p.midline_shift) < 0.1:
        return 0.0
    return np.float32(p.midline_shift) * np.exp(-(((w - p.shift_w) / 35.0) ** 2))


def petrous_line(u: np.ndarray | float, p: AnatomyParams) -> np.ndarray | float:
    """v of the petrous ridge: it runs from the clivus postero-laterally, dividing the middle from
    the posterior cranial fossa."""
    return -6.0 * p.scale + 0.55 * np.abs(u)


def anterior_fossa_v(u: np.ndarray | float, p: AnatomyParams) -> np.ndarray | float:
    """v of the sphenoid ridge (back edge of the anterior cranial fossa)."""
    return -0.36 * p.b - 0.12 * np.abs(u)


def tentorium_w(u: np.ndarray, v: np.ndarray, p: AnatomyParams) -> np.ndarray:
    """w of the tentorium cerebelli: highest at the incisura, sloping down to the transverse sinus."""
    s = p.scale
    return (-33.0 * s + 12.0 * s * np.exp(-((u / 28.0) ** 2))
            - 7.0 * s * np.clip(v / p.b, 0.0, 1.0)).astype(np.float32)


def inner_front(p: AnatomyParams, u: float, w: float) -> float:
    """v (< 0) of the front of the inner table at (u, w), from the same egg-shaped ellipsoid as
    :func:`bloodnet_ops.synth.anatomy.inner_table_distance` (without its small bumps)."""
    v = np.linspace(-1.3 * p.b, 0.0, 400)
    a = p.a * (1 + p.egg * np.clip(v / p.b, -1, 1))
    c = p.c if w > 0 else p.c_low
    q = (u / a) ** 2 + (v / p.b) ** 2 + (w / c) ** 2
    inside = np.flatnonzero(q < 1)
    return float(v[inside[0]]) if inside.size else -0.3 * p.b
