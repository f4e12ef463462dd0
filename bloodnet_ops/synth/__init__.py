"""The synthetic non-contrast head-CT generator behind ``bloodnet synth`` (DESIGN.md §4).

Modules, one concept each: ``geometry`` (grids, head frame, random fields), ``headparams`` and
``anatomy``/``brain``/``skullbase`` (the phantom in HU), ``hemorrhage`` (the five ICH subtypes and
their masks), ``mimics``, ``scanner`` (kernels, noise, artefacts, localizer), ``vendors`` (export
conventions per scanner), ``plan`` and ``study`` (one study), ``writer`` (fast DICOM encoding),
``faults``, ``reads``, ``drift`` (drift injected into one site from a date), ``preview``
(contact sheet) and ``dataset`` (:func:`generate_dataset`).
"""

from bloodnet_ops.synth.dataset import SynthSummary, generate_dataset

__all__ = ["SynthSummary", "generate_dataset"]
