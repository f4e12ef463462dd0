"""Small shape primitives in head coordinates, evaluated on sub-volumes."""

from __future__ import annotations

import numpy as np

from bloodnet_ops.synth.geometry import Box, HeadCoords


def ellipsoid_rho2(
    u: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    centre: tuple[float, float, float],
    radii: tuple[float, float, float],
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
) -> np.ndarray:
    """Squared normalised radius of an ellipsoid (< 1 inside), optionally yawed about w and pitched
    about u (degrees)."""
    du, dv, dw = u - centre[0], v - centre[1], w - centre[2]
    if yaw_deg:
        ca, sa = np.cos(np.deg2rad(yaw_deg)), np.sin(np.deg2rad(yaw_deg))
        du, dv = ca * du + sa * dv, -sa * du + ca * dv
    if pitch_deg:
        cb, sb = np.cos(np.deg2rad(pitch_deg)), np.sin(np.deg2rad(pitch_deg))
        dv, dw = cb * dv + sb * dw, -sb * dv + cb * dw
    return (du / radii[0]) ** 2 + (dv / radii[1]) ** 2 + (dw / radii[2]) ** 2


def ellipsoid_box(
    hc: HeadCoords,
    centre: tuple[float, float, float],
    radii: tuple[float, float, float],
    pad: float = 0.0,
) -> Box | None:
    """Grid box around an (unrotated bound of an) ellipsoid, ``pad`` mm larger on every side."""
    r = max(radii) + pad
    return hc.box(
        (centre[0] - r, centre[0] + r), (centre[1] - r, centre[1] + r), (centre[2] - r, centre[2] + r)
    )


def smoothstep(x: np.ndarray | float) -> np.ndarray:
    """Logistic step, 0 → 1 around x = 0 over about ±3."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float32)))


def air_cell_septa(field: np.ndarray, density: float = 4.0, width: float = 0.3) -> np.ndarray:
    """Thin irregular bony septa of air cells: iso-contours of a smooth random field."""
    return np.abs(np.sin(np.float32(density) * field)) < width
