"""Tissue classes of the phantom and the blood subtype codes of the ground-truth masks."""

from __future__ import annotations

from enum import IntEnum


class Tissue(IntEnum):
    """What fills a voxel before scanner effects; lesion placement reads these."""

    AIR = 0
    FAT = 1
    SOFT = 2  #: scalp, muscle, face
    BONE = 3
    CSF = 4  #: subarachnoid space: sulci, fissures, cisterns
    VENTRICLE = 5
    GM = 6
    WM = 7
    DEEP_GM = 8  #: basal ganglia, thalami
    CEREBELLUM = 9
    BRAINSTEM = 10
    SINUS = 11  #: dural venous sinus
    GLOBE = 12
    AIR_CELLS = 13  #: paranasal sinuses and mastoid air cells
    DEVICE = 14  #: head holder, cushion
    BLOOD = 15
    CALCIFICATION = 16
    DURA = 17  #: falx cerebri, tentorium


#: Brain parenchyma (where an intraparenchymal hematoma may sit).
PARENCHYMA = (Tissue.GM, Tissue.WM, Tissue.DEEP_GM, Tissue.CEREBELLUM, Tissue.BRAINSTEM)

#: Everything inside the dura.
INTRACRANIAL = (*PARENCHYMA, Tissue.CSF, Tissue.VENTRICLE, Tissue.SINUS, Tissue.DURA)


class Subtype(IntEnum):
    """Mask codes (DESIGN.md / COMMON.md): 0 = no blood."""

    EDH = 1
    SDH = 2
    SAH = 3
    IPH = 4
    IVH = 5


SUBTYPE_NAMES: tuple[str, ...] = tuple(s.name for s in Subtype)
