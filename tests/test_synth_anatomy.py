"""The normal anatomy and scanner physics that must not read as blood: every structure is present,
within the HU range its docstring states, across the randomised population of heads."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bloodnet_ops.synth import hemorrhage, mimics, scanner
from bloodnet_ops.synth.anatomy import build_anatomy
from bloodnet_ops.synth.geometry import Grid, HeadCoords, rotation
from bloodnet_ops.synth.headparams import sample_anatomy, tentorium_w
from bloodnet_ops.synth.tissue import Tissue


def _head(seed: int, spacing: float = 1.0, dz: float = 2.0, **overrides: float):
    """An unrotated head on a 1 mm grid (``dz`` between slices) centred on the origin, with its
    parameters. The grid is wider than the head on purpose: structures must not depend on the
    renderer's crop."""
    rng = np.random.default_rng(seed)
    p = replace(sample_anatomy(rng), **overrides)
    grid = Grid(z=np.arange(-75.0, 95.0, dz), y=np.arange(-110.0, 110.0, spacing),
                x=np.arange(-90.0, 90.0, spacing))
    hc = HeadCoords(grid, np.zeros(3), rotation(0.0, 0.0, 0.0))
    return build_anatomy(hc, p, rng), hc, p, rng


def _value_near(an, hc: HeadCoords, point, code: Tissue, radius: float = 4.0) -> np.ndarray:
    """HU of the voxels of ``code`` within ``radius`` mm of a head-coordinate point."""
    d2 = (hc.u - point[0]) ** 2 + (hc.v - point[1]) ** 2 + (hc.w - point[2]) ** 2
    sel = (d2 < radius**2) & (an.tissue == code)
    return an.hu[sel]


def test_population_ranges_are_wide_and_as_documented() -> None:
    rng = np.random.default_rng(0)
    ps = [sample_anatomy(rng) for _ in range(400)]
    falx = np.array([p.falx_hu for p in ps])
    venous = np.array([p.venous_hu for p in ps])
    tent = np.array([p.tent_hu for p in ps])
    assert falx.min() >= 35 and falx.max() <= 80 and np.ptp(falx) > 35
    assert venous.min() >= 40 and venous.max() <= 70 and np.ptp(venous) > 25
    assert tent.min() >= 35 and tent.max() <= 75
    thick = np.array([2 * p.falx_half_t for p in ps])
    assert thick.min() < 0.8 and thick.max() > 2.8  # thin to thick falx
    children = [p for p in ps if p.child]
    adults = [p for p in ps if not p.child]
    assert 15 <= len(children) <= 60
    assert max(p.b for p in children) < min(p.b for p in adults)
    assert all(p.frontal_sinus == 0 and p.atrophy == 0 and p.skull_t <= 4.5 for p in children)
    assert max(p.atrophy for p in adults) > 0.8  # wide sulci and large ventricles occur


@pytest.mark.parametrize("seed", [1, 2])
def test_falx_tentorium_and_sinuses_in_their_hu_ranges(seed: int) -> None:
    an, hc, p, _ = _head(seed)
    dura = an.tissue == Tissue.DURA
    falx = dura & (hc.w > 10)
    tent = dura & (hc.w < -5) & (np.abs(hc.u) > 8)
    assert falx.sum() > 200 and tent.sum() > 100
    assert np.allclose(an.hu[falx], p.falx_hu) and 35 <= p.falx_hu <= 80
    assert np.allclose(an.hu[tent], p.tent_hu) and 35 <= p.tent_hu <= 75
    # falx in the midline, tentorium along its surface
    assert np.abs(hc.u[falx]).max() < 2 * p.falx_half_t * 1.6 + 1.0
    tw = tentorium_w(hc.u[tent], hc.v[tent], p)
    assert np.abs(hc.w[tent] - tw).max() < p.tent_half_t + 1.0
    sinus = an.tissue == Tissue.SINUS
    assert np.allclose(an.hu[sinus], p.venous_hu) and 40 <= p.venous_hu <= 70
    # superior sagittal sinus at the vertex, torcula, straight and both sigmoid sinuses
    top = sinus & (hc.w > 0.6 * p.c) & (np.abs(hc.u) < 6)
    assert top.sum() > 20
    for name in ("torcula", "sigmoid_l", "sigmoid_r"):
        vals = _value_near(an, hc, an.landmarks[name], Tissue.SINUS, radius=6.0)
        assert vals.size > 5, name
    sig_l, sig_r = an.landmarks["sigmoid_l"], an.landmarks["sigmoid_r"]
    assert sig_l[0] > 20 and sig_r[0] < -20 and sig_l[2] < -20  # lateral, low, behind petrous


def test_dense_sinus_mimic_reaches_its_range() -> None:
    an, _, _p, _ = _head(3, venous_hu=74.0)
    assert np.allclose(an.hu[an.tissue == Tissue.SINUS], 74.0)
    rng = np.random.default_rng(5)
    dense = [m.dense_sinus for m in (mimics.plan_mimics(rng, strong=True) for _ in range(300))
             if m.dense_sinus]
    assert dense and min(dense) >= 65 and max(dense) <= 78


def test_physiological_calcifications_and_dural_plaques() -> None:
    an, hc, _, rng = _head(4, dz=1.0)
    plan = mimics.MimicPlan(pineal=300.0, choroid=250.0, basal_ganglia=150.0, falx=400.0,
                            dense_sinus=0.0, plaques=4, streak_hu=10.0, streak_lines=1)
    before = an.tissue == Tissue.CALCIFICATION
    mimics.paint_calcifications(an, hc, plan, rng)
    calc = (an.tissue == Tissue.CALCIFICATION) & ~before
    assert calc.sum() > 30
    vals = an.hu[calc]
    assert vals.min() >= 100 and vals.max() <= 700
    for name, hu in (("pineal", 300.0), ("atrium_l", 250.0), ("gp_l", 150.0)):
        near = _value_near(an, hc, an.landmarks[name], Tissue.CALCIFICATION, radius=8.0)
        assert near.size and np.any(np.isclose(near, hu)), name
    # plaques: calcified voxels against the inner table over the convexity (150-600 HU)
    plaque = calc & (an.d_in < 4.0) & (hc.w > 0) & ~np.isin(an.hu, [300.0, 250.0, 150.0, 400.0])
    assert plaque.sum() > 0
    assert an.hu[plaque].min() >= 150 and an.hu[plaque].max() <= 600


def test_skull_base_petrous_mastoid_orbits_and_air() -> None:
    an, hc, _p, _ = _head(6)
    low = hc.w < -25
    bone = an.tissue == Tissue.BONE
    pet = _value_near(an, hc, an.landmarks["petrous_l"], Tissue.BONE, radius=8.0)
    assert pet.size > 20 and np.median(pet) > 1000  # dense petrous ridge
    air_cells = (an.tissue == Tissue.AIR_CELLS) & low
    assert air_cells.sum() > 200 and an.hu[air_cells].max() < -800  # sphenoid, ethmoid, mastoid
    globes = an.tissue == Tissue.GLOBE
    assert globes.sum() > 500 and 0 <= np.median(an.hu[globes]) <= 45
    assert (bone & low).sum() > (bone & ~low).sum() * 0.1


def test_noise_power_spectrum_dose_rings_and_motion() -> None:
    rng = np.random.default_rng(0)
    white = rng.standard_normal((2, 128, 128), dtype=np.float32)
    n = scanner.nps_noise(white, np.random.default_rng(1), 0.8)
    assert abs(float(n[0].std()) - 1.0) < 0.05
    spec = np.abs(np.fft.fft2(n[0])) ** 2
    wspec = np.abs(np.fft.fft2(white[0])) ** 2
    # correlated, not white: high frequencies suppressed relative to white noise
    assert spec[60:68, 60:68].mean() < 0.3 * wspec[60:68, 60:68].mean()
    assert scanner.dose_noise(4.0, 120, 250, 0.625) > scanner.dose_noise(4.0, 120, 250, 5.0)
    assert scanner.dose_noise(4.0, 120, 100, 5.0) > scanner.dose_noise(4.0, 120, 400, 5.0)
    assert scanner.dose_noise(4.0, 100, 250, 5.0) > scanner.dose_noise(4.0, 140, 250, 5.0)
    ring = scanner.rings(np.random.default_rng(2), (128, 128), (64.0, 64.0), 1.0)
    assert 4.0 <= np.abs(ring).max() <= 45.0 and np.abs(ring[64, 64]) < 1.0
    head = np.full((8, 64, 64), -1000.0, np.float32)
    head[:, 16:48, 16:48] = 1500.0
    head[:, 20:44, 20:44] = 35.0
    moved = head.copy()
    scanner.motion(np.random.default_rng(3), moved, 0.5)
    changed = np.flatnonzero(np.abs(moved - head).reshape(8, -1).max(axis=1) > 1)
    assert 1 <= changed.size < 8 and np.all(np.diff(changed) == 1)  # a few consecutive slices


def test_harder_blood_densities_and_sizes() -> None:
    rng = np.random.default_rng(0)
    hus = np.array([hemorrhage._acute_hu(rng, 55, 85) for _ in range(3000)])
    assert hus.min() >= 25 and hus.max() <= 85
    assert 0.02 < np.mean(hus < 33) < 0.07  # hypodense
    assert 0.12 < np.mean((hus >= 33) & (hus < 50)) < 0.22  # near-isodense
    p = sample_anatomy(rng)
    sdh = [hemorrhage._plan_sdh(rng, 1.0, p) for _ in range(600)]
    kinds = {k: sum(s.kind == k for s in sdh) for k in ("falcine", "tentorial")}
    assert kinds["falcine"] > 60 and kinds["tentorial"] > 40
    assert any(s.mixed < 0 for s in sdh)  # acute-on-chronic
    ivh = [hemorrhage._plan_ivh(rng, 1.0, p) for _ in range(300)]
    assert min(x.size[0] for x in ivh) < 1.2  # a sliver in the occipital horn
