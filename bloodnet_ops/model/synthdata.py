"""Training studies straight from the phantom, without writing DICOM.

``bloodnet synth`` → DICOM → validator → HU loader is the path to train on (it is what inference
sees). On a lent GPU there is no time for it: the 16 cores render studies in memory and the
prepared arrays go to the trainer directly. The HU are the renderer's, outside the
reconstruction circle set to air, which is what the HU loader gives back from any vendor's
encoding (tests check that round trip for every profile).
"""

from __future__ import annotations

import numpy as np

from bloodnet_ops.model.data import CachedStudy, StudyLabel
from bloodnet_ops.model.prep import prepare_mask, prepare_volume
from bloodnet_ops.synth.plan import StudyPlan, plan_studies
from bloodnet_ops.synth.study import render_study
from bloodnet_ops.synth.tissue import Subtype


def render_cached(plan: StudyPlan, size: int) -> CachedStudy:
    """Render one planned study and prepare it as the training cache would."""
    rs = render_study(plan)
    hu = rs.soft.copy()
    hu[:, rs.outside] = -1000.0
    g = rs.geometry
    prep = prepare_volume(hu, (g.thickness, g.pixel_spacing, g.pixel_spacing), size=size)
    mask = prepare_mask(rs.labels, prep, size)
    subs = tuple(Subtype(c).name for c in sorted(set(np.unique(rs.labels).tolist()) - {0}))
    label = StudyLabel(study_uid=plan.study_uid, site=plan.site, ich=bool(subs), subtypes=subs,
                       volume_ml=rs.volume_ml(), series_uid="")
    return CachedStudy(label, prep.hu.astype(np.float16), mask, prep.voxel_mm)


def _one(args: tuple[StudyPlan, int]) -> CachedStudy:
    return render_cached(*args)


def render_many(*, studies: int, sites: int, seed: int, matrix: int, size: int,
                positive_rate: float = 0.45, workers: int = 1) -> list[CachedStudy]:
    """``studies`` prepared studies from one seed, rendered by ``workers`` processes."""
    plans = [p for p in plan_studies(studies=studies, sites=sites, seed=seed,
                                     positive_rate=positive_rate, matrix=matrix, fault_rate=0.0)]
    jobs = [(p, size) for p in plans]
    if workers <= 1:
        return [_one(j) for j in jobs]
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers) as pool:
        return pool.map(_one, jobs, chunksize=4)
