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
    venous_hu: float  #: dural sinuses, 40-70 HU with the patient's haematocrit; 65-78 "dense"
    falx_hu: float  #: falx cerebri, 35-80 HU
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
    falx_half_t: float = 0.55  #: half thickness of the falx (mm), 0.3-1.6
    tent_hu: float = 50.0  #: tentorium cerebelli, 35-75 HU
    tent_half_t: float = 0.35  #: half thickness of the tentorium (mm)
    sinus_scale: float = 1.0  #: calibre of the venous sinuses relative to an average adult
    child: bool = False  #: a child's head: small, thin skull, no frontal sinus, no atrophy
    midline_shift: float = 0.0  #: mm towards +u (patient left) of the midline structures
    shift_w: float = 20.0  #: level (w) of the largest shift

    @property
    def scale(self) -> float:
        """Head size relative to an average adult (inner AP semi-axis 84 mm)."""
        return self.b / 84.0


def sample_anatomy(rng: np.random.Generator) -> AnatomyParams:
    """Draw one head: an adult (atrophy from none to marked) or, one time in twelve, a child of
    5-12 years (0.8-0.9 of adult size, thin skull, no frontal sinus, small ventricles).

    Dura and venous blood are drawn wide on purpose (domain randomisation), so that no single
    density of a normal structure means blood: falx 35-80 HU and 0.6-3.2 mm thick, tentorium
    35-75 HU, venous sinuses 40-70 HU (haematocrit from anaemic to polycythaemic)."""
    child = bool(rng.random() < 1 / 12)
    b = rng.uniform(78.0, 88.0) * (rng.uniform(0.8, 0.9) if child else 1.0)
    atrophy = 0.0 if child else float(np.clip(rng.beta(1.4, 4.0) * 1.3, 0, 1))
    gm = rng.uniform(34.0, 42.0)
    return AnatomyParams(
        a=b * rng.uniform(0.76, 0.86),
        b=b,
        c=b * rng.uniform(0.86, 0.96),
        c_low=b * rng.uniform(1.25, 1.5),
        egg=rng.uniform(0.0, 0.09),
        skull_t=rng.uniform(2.5, 4.5) if child else rng.uniform(4.5, 9.0),
        cortical_hu=rng.uniform(1200.0, 1950.0),
        diploe_hu=rng.uniform(300.0, 800.0),
        scalp_t=rng.uniform(3.0, 8.0),
        fat_frac=rng.uniform(0.15, 0.5),
        temporalis=rng.uniform(3.0, 11.0),
        atrophy=atrophy,
        gm_hu=gm,
        wm_hu=gm - rng.uniform(6.0, 12.0),
        csf_hu=rng.uniform(0.0, 14.0),
        deep_gm_hu=gm - rng.uniform(0.0, 4.0),
        venous_hu=rng.uniform(40.0, 70.0),
        falx_hu=rng.uniform(35.0, 80.0),
        sulcal_corr=rng.uniform(4.0, 5.5),
        sulcal_depth=rng.uniform(12.0, 20.0),
        cortex_t=rng.uniform(2.3, 3.4),
        vent_scale=(rng.uniform(0.55, 0.8) if child
                    else 0.8 + 0.9 * atrophy * rng.uniform(0.6, 1.0)),
        vent_asym=rng.uniform(0.85, 1.15),
        ant_floor=rng.uniform(-22.0, -14.0),
        mid_floor=rng.uniform(-47.0, -39.0),
        post_floor=rng.uniform(-62.0, -55.0),
        frontal_sinus=0.0 if child else float(rng.uniform(0, 1) if rng.random() < 0.8 else 0.0),
        mastoid=rng.uniform(0.1, 0.4) if child else rng.uniform(0.2, 1.0),
        falx_half_t=rng.uniform(0.3, 1.6),
        tent_hu=rng.uniform(35.0, 75.0),
        tent_half_t=rng.uniform(0.3, 1.2),
        sinus_scale=rng.uniform(0.7, 1.4),
        child=child,
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
