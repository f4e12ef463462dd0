"""Voxel grids, the head's own coordinate frame, and smooth random fields.

Patient coordinates are DICOM LPS in mm: +x is the patient's left, +y posterior, +z superior. An
axial image with ImageOrientationPatient (1,0,0,0,1,0) has columns along +x and rows along +y, so
the face is at the top of the picture.

Head coordinates ``(u, v, w)`` (mm) are attached to the anatomy: +u left, +v posterior, +w superior,
origin at the centre of the cranial vault at the level of the lateral ventricles. A study's head is
rotated (yaw, pitch, roll) and shifted inside the scanner, so the slices cut the anatomy at a slightly
different angle in every study.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Grid:
    """Voxel centres of an axial volume in patient coordinates (mm), ascending along each axis."""

    z: np.ndarray  #: (nz,) slice positions
    y: np.ndarray  #: (ny,) row centres
    x: np.ndarray  #: (nx,) column centres

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z.size, self.y.size, self.x.size)


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Head → patient rotation: yaw about z, pitch about x (nodding), roll about y; (3, 3)."""
    a, b, c = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return rz @ rx @ ry


class HeadCoords:
    """Head coordinates ``u, v, w`` (float32, shape (nz, ny, nx)) of every voxel of a grid.

    ``box`` turns a head-coordinate bounding box into index slices of the grid, so small structures
    are computed on a sub-volume only (that is what keeps a study at a few hundred ms).
    """

    def __init__(self, grid: Grid, centre: np.ndarray, rot: np.ndarray) -> None:
        self.grid = grid
        self.centre = np.asarray(centre, dtype=np.float64)
        self.rot = np.asarray(rot, dtype=np.float64)
        rt = self.rot.T  # patient → head
        px = (grid.x - self.centre[0]).astype(np.float32)[None, None, :]
        py = (grid.y - self.centre[1]).astype(np.float32)[None, :, None]
        pz = (grid.z - self.centre[2]).astype(np.float32)[:, None, None]
        f = rt.astype(np.float32)
        self.u = f[0, 0] * px + f[0, 1] * py + f[0, 2] * pz
        self.v = f[1, 0] * px + f[1, 1] * py + f[1, 2] * pz
        self.w = f[2, 0] * px + f[2, 1] * py + f[2, 2] * pz

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.grid.shape

    def to_patient(self, h: np.ndarray) -> np.ndarray:
        """Head → patient coordinates; ``h`` (..., 3) in mm."""
        return np.asarray(h) @ self.rot.T + self.centre

    def box(
        self,
        u: tuple[float, float],
        v: tuple[float, float],
        w: tuple[float, float],
        margin: float = 2.0,
    ) -> Box | None:
        """Index slices covering a head-coordinate box (mm); ``None`` when it misses the grid."""
        return index_box(self.grid, self.centre, self.rot, u, v, w, margin)

    def sub(self, b: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of ``u, v, w`` inside a box."""
        return self.u[b], self.v[b], self.w[b]


def index_box(
    grid: Grid,
    centre: np.ndarray,
    rot: np.ndarray,
    u: tuple[float, float],
    v: tuple[float, float],
    w: tuple[float, float],
    margin: float = 2.0,
) -> Box | None:
    """Index slices of ``grid`` covering a box given in head coordinates (mm)."""
    corners = np.array([[uu, vv, ww] for uu in u for vv in v for ww in w], dtype=np.float64)
    p = corners @ np.asarray(rot).T + np.asarray(centre)
    out = []
    for axis, coords in ((2, grid.z), (1, grid.y), (0, grid.x)):
        lo, hi = p[:, axis].min() - margin, p[:, axis].max() + margin
        i0 = int(np.searchsorted(coords, lo, side="left"))
        i1 = int(np.searchsorted(coords, hi, side="right"))
        if i1 <= i0:
            return None
        out.append(slice(i0, i1))
    return (out[0], out[1], out[2])


def interp_matrix(coords: np.ndarray, corr: float) -> np.ndarray:
    """Gaussian weights from output coordinates to random nodes spaced corr/2 apart."""
    lo, hi = float(coords.min()) - 2 * corr, float(coords.max()) + 2 * corr
    nodes = np.arange(lo, hi + corr / 2, corr / 2)
    d = (coords[:, None] - nodes[None, :]) / corr
    return np.exp(-0.5 * d * d).astype(np.float32)


def smooth_field(
    rng: np.random.Generator,
    grid: Grid,
    corr_mm: float | tuple[float, float, float],
    box: Box | None = None,
) -> np.ndarray:
    """A zero-mean, unit-variance Gaussian random field with correlation length ``corr_mm``.

    Separable Gaussian interpolation of white noise on a coarse node lattice (three small matrix
    products), so it costs a few ms even at 512². Returns float32 of the grid (or ``box``) shape.
    ``corr_mm`` may be one value or (z, y, x).
    """
    cz, cy, cx = (corr_mm, corr_mm, corr_mm) if np.isscalar(corr_mm) else corr_mm  # type: ignore[misc]
    z, y, x = grid.z, grid.y, grid.x
    if box is not None:
        z, y, x = z[box[0]], y[box[1]], x[box[2]]
    wz, wy, wx = interp_matrix(z, cz), interp_matrix(y, cy), interp_matrix(x, cx)
    nodes = rng.standard_normal((wz.shape[1], wy.shape[1], wx.shape[1]), dtype=np.float32)
    t = nodes @ wx.T  # (gz, gy, nx)
    t = np.einsum("bj,ijk->ibk", wy, t, optimize=True)  # (gz, ny, nx)
    t = np.tensordot(wz, t, axes=(1, 0))  # (nz, ny, nx)
    sd = float(t[::3, ::5, ::5].std()) if t.size > 200_000 else float(t.std())
    return (t / sd if sd > 0 else t).astype(np.float32, copy=False)
