"""Scanner vendor profiles: how each site's scanners encode the same HU.

The profiles differ the way real head-CT exports do: signed or unsigned pixels, BitsStored 12 or
16, RescaleIntercept -1024 / -1000 / 0 with a slope of 1 (and one of 0.5), padding outside the
reconstruction circle (a PixelPaddingValue, or an air value without one), kernel names, slice
thickness, slice order, implicit or explicit VR little endian.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

#: HU below which scanners clip (the lowest value a reconstruction writes inside the circle).
MIN_HU = -1024.0


@dataclass(frozen=True)
class VendorProfile:
    """One scanner model's export conventions."""

    key: str
    manufacturer: str
    model: str
    software: str
    pixel_representation: int  #: 0 unsigned, 1 two's complement
    bits_stored: int
    intercept: float
    slope: float
    padding: int | None  #: PixelPaddingValue (stored units), or None when not written
    outside: int  #: stored value written outside the reconstruction circle
    soft_kernel: str
    bone_kernel: str
    thicknesses: tuple[float, ...]  #: slice thickness choices (mm), spacing = thickness
    implicit_vr: bool
    descending: bool  #: InstanceNumber 1 is the top slice
    kvps: tuple[float, ...]
    fov: tuple[float, float]  #: reconstruction diameter range (mm)
    noise: tuple[float, float]  #: soft-kernel noise sigma range (HU) in brain
    slice_location: bool  #: writes SliceLocation
    two_windows: bool  #: WindowCenter/Width with two values
    names: tuple[str, str, str]  #: series descriptions: localizer, soft (``{t}``), bone
    holder: float  #: probability that the head holder is in the field of view
    bone_window: tuple[float, float] = (600.0, 2800.0)

    @property
    def stored_limits(self) -> tuple[int, int]:
        """Smallest and largest stored value that BitsStored allows."""
        if self.pixel_representation == 0:
            return 0, 2**self.bits_stored - 1
        return -(2 ** (self.bits_stored - 1)), 2 ** (self.bits_stored - 1) - 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype("<u2") if self.pixel_representation == 0 else np.dtype("<i2")

    def to_stored(self, hu: np.ndarray) -> np.ndarray:
        """HU → stored values (rounded, clipped to BitsStored and to MIN_HU), in :attr:`dtype`."""
        lo, hi = self.stored_limits
        lo = max(lo, int(np.ceil((MIN_HU - self.intercept) / self.slope)))
        s = np.rint((hu - np.float32(self.intercept)) / np.float32(self.slope))
        np.clip(s, lo, hi, out=s)
        return s.astype(self.dtype)

    def to_hu(self, stored: np.ndarray) -> np.ndarray:
        """Stored → HU as a reader should do it (padding → MIN_HU)."""
        hu = stored.astype(np.float32) * np.float32(self.slope) + np.float32(self.intercept)
        if self.padding is not None:
            hu[stored == self.dtype.type(self.padding)] = MIN_HU
        return hu


PROFILES: tuple[VendorProfile, ...] = (
    VendorProfile(
        key="siemens-definition", manufacturer="SIEMENS", model="SOMATOM Definition AS+",
        software="syngo CT VA48A", pixel_representation=0, bits_stored=12, intercept=-1024.0,
        slope=1.0, padding=None, outside=0, soft_kernel="H30s", bone_kernel="H70h",
        thicknesses=(5.0, 4.8), implicit_vr=False, descending=True, kvps=(120.0,),
        fov=(220.0, 240.0), noise=(3.5, 5.5), slice_location=True, two_windows=False,
        names=("Topogram  0.6  T20s", "Head  {t}  H30s", "Head  {t}  H70h"), holder=0.6,
        bone_window=(500.0, 2000.0),
    ),
    VendorProfile(
        key="ge-lightspeed", manufacturer="GE MEDICAL SYSTEMS", model="LightSpeed VCT",
        software="07MW18.4", pixel_representation=1, bits_stored=16, intercept=-1024.0,
        slope=1.0, padding=-2000, outside=-2000, soft_kernel="STANDARD", bone_kernel="BONE",
        thicknesses=(5.0, 2.5), implicit_vr=True, descending=False, kvps=(120.0, 140.0),
        fov=(220.0, 250.0), noise=(4.0, 7.0), slice_location=True, two_windows=True,
        names=("Scout", "{t}mm Std", "{t}mm Bone"), holder=0.8,
    ),
    VendorProfile(
        key="philips-brilliance", manufacturer="Philips", model="Brilliance 64",
        software="4.1.6", pixel_representation=0, bits_stored=12, intercept=-1000.0, slope=1.0,
        padding=0, outside=0, soft_kernel="UB", bone_kernel="YC", thicknesses=(3.0, 5.0),
        implicit_vr=False, descending=False, kvps=(120.0,), fov=(220.0, 235.0),
        noise=(3.0, 5.0), slice_location=True, two_windows=False,
        names=("Surview", "Brain {t}mm", "Bone {t}mm"), holder=0.5,
    ),
    VendorProfile(
        key="toshiba-aquilion", manufacturer="TOSHIBA", model="Aquilion ONE",
        software="V6.00ER007", pixel_representation=1, bits_stored=16, intercept=0.0, slope=1.0,
        padding=-3024, outside=-3024, soft_kernel="FC21", bone_kernel="FC30",
        thicknesses=(4.0, 5.0), implicit_vr=False, descending=True, kvps=(120.0, 135.0),
        fov=(220.0, 240.0), noise=(4.0, 6.0), slice_location=False, two_windows=False,
        names=("Scanogram", "Brain {t}", "Bone {t}"), holder=0.7,
    ),
    VendorProfile(
        key="ge-optima", manufacturer="GE MEDICAL SYSTEMS", model="Optima CT660",
        software="ct660_sp1", pixel_representation=0, bits_stored=16, intercept=-1024.0,
        slope=1.0, padding=63536, outside=63536, soft_kernel="SOFT", bone_kernel="BONEPLUS",
        thicknesses=(5.0, 2.5), implicit_vr=False, descending=False, kvps=(120.0,),
        fov=(225.0, 250.0), noise=(4.0, 6.5), slice_location=True, two_windows=True,
        names=("Scout", "Head {t}mm Soft", "Head {t}mm Boneplus"), holder=0.8,
    ),
    VendorProfile(
        key="hitachi-scenaria", manufacturer="Hitachi Medical Corporation", model="SCENARIA",
        software="V4.0", pixel_representation=0, bits_stored=16, intercept=-1024.0, slope=0.5,
        padding=None, outside=0, soft_kernel="HEAD-STD", bone_kernel="BONE-HR",
        thicknesses=(5.0, 3.0), implicit_vr=False, descending=True, kvps=(120.0,),
        fov=(220.0, 240.0), noise=(4.0, 7.0), slice_location=True, two_windows=False,
        names=("SCANO", "HEAD {t}mm", "HEAD BONE {t}mm"), holder=0.4,
    ),
    VendorProfile(
        key="canon-prime", manufacturer="Canon Medical Systems", model="Aquilion Prime SP",
        software="V8.9", pixel_representation=1, bits_stored=12, intercept=0.0, slope=1.0,
        padding=-2048, outside=-2048, soft_kernel="FC26", bone_kernel="FC35",
        thicknesses=(5.0, 4.0), implicit_vr=True, descending=False, kvps=(100.0, 120.0),
        fov=(220.0, 240.0), noise=(4.5, 8.0), slice_location=False, two_windows=False,
        names=("Scanogram", "Brain {t}", "Bone {t}"), holder=0.7,
    ),
)

#: Scanners a site installs later (``generate_dataset(drift_site=...)``, :mod:`.drift`). Not in
#: :data:`PROFILES`, so no site starts with one. Both reconstruct thin (2 mm) slices and use an
#: intercept that differs from those of the sites they replace a scanner at (Siemens' extended CT
#: scale writes -8192).
NEW_SCANNERS: tuple[VendorProfile, ...] = (
    VendorProfile(
        key="siemens-force", manufacturer="SIEMENS", model="SOMATOM Force",
        software="syngo CT VB10A", pixel_representation=0, bits_stored=16, intercept=-8192.0,
        slope=1.0, padding=None, outside=7168, soft_kernel="Hr38", bone_kernel="Hr64",
        thicknesses=(2.0,), implicit_vr=False, descending=True, kvps=(100.0, 120.0),
        fov=(220.0, 240.0), noise=(3.0, 4.5), slice_location=True, two_windows=False,
        names=("Topogram  0.6  Tr20f", "Head  {t}  Hr38", "Head  {t}  Hr64"), holder=0.6,
        bone_window=(500.0, 2000.0),
    ),
    VendorProfile(
        key="philips-incisive", manufacturer="Philips", model="Incisive CT", software="5.0.1",
        pixel_representation=1, bits_stored=16, intercept=-1000.0, slope=1.0, padding=-2000,
        outside=-2000, soft_kernel="UC", bone_kernel="YD", thicknesses=(2.0,),
        implicit_vr=False, descending=False, kvps=(120.0,), fov=(220.0, 240.0),
        noise=(3.0, 4.5), slice_location=True, two_windows=False,
        names=("Surview", "Brain {t}mm iDose", "Bone {t}mm iDose"), holder=0.5,
    ),
)

#: Slice thickness of a site's own scanners after a protocol change to thin slices.
THIN_SLICE_MM = 2.0
THIN_SUFFIX = "+thin"


def thin_variant(profile: VendorProfile) -> VendorProfile:
    """The same scanner reconstructing :data:`THIN_SLICE_MM` slices (a protocol change)."""
    return replace(profile, key=profile.key + THIN_SUFFIX, thicknesses=(THIN_SLICE_MM,))


BY_KEY: dict[str, VendorProfile] = {
    p.key: p for p in (*PROFILES, *NEW_SCANNERS, *(thin_variant(q) for q in PROFILES))
}


def site_name(i: int) -> str:
    """``site-a``, ``site-b``, ... ``site-z``, then ``site-27``..."""
    return f"site-{chr(ord('a') + i)}" if i < 26 else f"site-{i + 1}"


def site_profiles(sites: int, seed: int) -> dict[str, tuple[VendorProfile, VendorProfile]]:
    """Two scanners per site (an older and a newer one), walking round the profile list from a
    seed-dependent start, so any four consecutive sites use every profile."""
    start = seed % len(PROFILES)
    out = {}
    for i in range(sites):
        a = PROFILES[(start + 2 * i) % len(PROFILES)]
        b = PROFILES[(start + 2 * i + 1) % len(PROFILES)]
        out[site_name(i)] = (a, b)
    return out


def new_scanner_for(current: tuple[VendorProfile, ...]) -> VendorProfile:
    """The scanner that replaces a site's ``current`` ones: the first of :data:`NEW_SCANNERS`
    whose manufacturer, kernels and intercept all differ from theirs, so every acquisition field
    the drift monitor compares changes."""
    for cand in NEW_SCANNERS:
        if all(cand.manufacturer != p.manufacturer and cand.intercept != p.intercept
               and cand.soft_kernel != p.soft_kernel for p in current):
            return cand
    raise ValueError(f"no new scanner differs from {[p.key for p in current]}")
