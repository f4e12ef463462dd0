"""HU → window channels, with neighbour-slice context.

The network never sees raw stored values or vendor quirks: every input channel is a CT window
(centre/width in HU) mapped to [0, 1]. Air, padding and anything below the window all become 0,
so padding of -1024, -2000 or -3024 HU looks the same.

Channel order for one slice ``i`` of a volume (``N_CHANNELS`` = 5)::

    0  brain     40/80    of slice i
    1  subdural  80/200   of slice i
    2  bone      600/2800 of slice i
    3  brain     40/80    of slice i - 1  (the slice below; the first slice repeats itself)
    4  brain     40/80    of slice i + 1  (the slice above; the last slice repeats itself)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, slots=True)
class Window:
    """A CT display window: ``centre`` and ``width`` in HU."""

    name: str
    centre: float
    width: float

    @property
    def low(self) -> float:
        return self.centre - self.width / 2

    def __call__(self, hu: torch.Tensor) -> torch.Tensor:
        """Map HU to [0, 1]: ``low`` → 0, ``low + width`` → 1, clipped."""
        return ((hu - self.low) / self.width).clamp_(0.0, 1.0)


BRAIN = Window("brain", 40.0, 80.0)
SUBDURAL = Window("subdural", 80.0, 200.0)
BONE = Window("bone", 600.0, 2800.0)
WINDOWS: tuple[Window, ...] = (BRAIN, SUBDURAL, BONE)

#: Channels per slice: three windows of the slice plus the brain window of both neighbours.
N_CHANNELS = len(WINDOWS) + 2


def window_stack(hu: torch.Tensor) -> torch.Tensor:
    """Windows of a stack of slices.

    Parameters
    ----------
    hu : tensor (n, 3, H, W)
        HU of (slice below, slice, slice above) for ``n`` slices.

    Returns
    -------
    tensor (n, 5, H, W) float32 in [0, 1], channel order as in the module docstring.
    """
    if hu.ndim != 4 or hu.shape[1] != 3:
        raise ValueError(f"hu must have shape (n, 3, H, W); got {tuple(hu.shape)}")
    hu = hu.float()
    centre = hu[:, 1:2]
    chans = [w(centre.clone()) for w in WINDOWS]
    chans.append(BRAIN(hu[:, 0:1].clone()))
    chans.append(BRAIN(hu[:, 2:3].clone()))
    return torch.cat(chans, dim=1)


def neighbour_indices(n: int, *, step: int = 1) -> np.ndarray:
    """Indices (n, 3) of (below, self, above) for each of ``n`` slices, edges repeated."""
    idx = np.arange(n)
    below = np.clip(idx - step, 0, n - 1)
    above = np.clip(idx + step, 0, n - 1)
    return np.stack([below, idx, above], axis=1)


def context_stack(volume_hu: np.ndarray | torch.Tensor, slices: np.ndarray | None = None,
                  *, step: int = 1) -> torch.Tensor:
    """HU triplets (below, self, above) for the chosen slices of a volume.

    Parameters
    ----------
    volume_hu : array (z, H, W) in HU, z ascending along the slice normal
    slices : optional int array of slice indices (default: all)

    Returns
    -------
    tensor (len(slices), 3, H, W) float32 in HU (feed to :func:`window_stack`).
    """
    vol = torch.as_tensor(volume_hu)
    if vol.ndim != 3:
        raise ValueError(f"volume_hu must have shape (z, H, W); got {tuple(vol.shape)}")
    trip = neighbour_indices(vol.shape[0], step=step)
    if slices is not None:
        trip = trip[np.asarray(slices, dtype=np.int64)]
    return vol[torch.as_tensor(trip.reshape(-1))].reshape(len(trip), 3, *vol.shape[1:]).float()


def slice_channels(volume_hu: np.ndarray | torch.Tensor) -> torch.Tensor:
    """All slices of a volume as network input: (z, 5, H, W) float32 in [0, 1]."""
    return window_stack(context_stack(volume_hu))
