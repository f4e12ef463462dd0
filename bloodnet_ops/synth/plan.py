"""The data set plan: which study goes to which site and scanner, its UIDs, patient, dates, and
whether it is positive or a fault. Made up front in the parent process from the seed alone, so the
output does not depend on the number of workers."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import numpy as np

from bloodnet_ops.synth.tissue import Subtype
from bloodnet_ops.synth.vendors import site_profiles

#: Bad-input kinds that ``fault_rate`` draws from (see :mod:`.faults`).
FAULT_KINDS: tuple[str, ...] = (
    "slice_gap", "contrast", "not_head", "missing_rescale", "truncated", "non_dicom", "empty",
    "duplicate",
)
#: The StudyDate of the first night of every data set.
FIRST_NIGHT = dt.date(2025, 3, 3)


@dataclass(frozen=True)
class StudyPlan:
    """Everything that identifies one study; the pixels come from its own seed."""

    index: int
    seed: int
    site: str
    profile_key: str
    study_uid: str
    localizer_uid: str
    soft_uid: str
    bone_uid: str
    frame_uid: str
    patient_id: str
    patient_name: str
    patient_sex: str
    patient_age: int
    accession: str
    study_date: str  #: YYYYMMDD
    study_time: str  #: HHMMSS
    positive: bool
    lead: Subtype | None  #: first lesion's subtype (cycled so small sets show every subtype)
    fault: str | None
    matrix: int
    strong_mimics: bool
    bleed_draws: int = 1  #: lesion sets drawn, the largest kept (>1: larger bleeds)

    def uid(self, *parts: object) -> str:
        """A deterministic UID for anything in this study (e.g. an instance)."""
        return synth_uid(self.seed, self.study_uid, *parts)


#: Name-based (version 5) UUIDs under this namespace give the 2.25 UIDs of a data set.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://bloodnet.invalid/synth")


def synth_uid(*parts: object) -> str:
    """A UID under the UUID root 2.25 from a name-based UUID of ``parts``: the same parts give
    the same UID on every run (``pydicom.uid.generate_uid(prefix=None)`` ignores its entropy
    sources and is random)."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, chr(31).join(map(str, parts))).int}"


def _uid(seed: int, *parts: object) -> str:
    return synth_uid("bloodnet-synth", seed, *parts)


def default_nights(studies: int) -> int:
    """Nights a data set spans unless told: about a dozen studies a night, at least three."""
    return max(3, int(np.ceil(studies / 12)))


def plan_studies(
    *, studies: int, sites: int, seed: int, positive_rate: float, matrix: int,
    fault_rate: float, nights: int | None = None,
) -> list[StudyPlan]:
    """Plan a data set. Positives are exactly ``round(positive_rate * studies)``; their lead
    subtypes cycle through a shuffled list of the five; faults are ``round(fault_rate * studies)``
    studies (at least one when the rate is positive) with kinds cycled the same way. StudyDates
    are drawn uniformly from ``nights`` consecutive days from :data:`FIRST_NIGHT` (default
    :func:`default_nights`)."""
    if studies < 1 or sites < 1:
        raise ValueError(f"studies and sites must be >= 1, got studies={studies} sites={sites}")
    if not 0.0 <= positive_rate <= 1.0 or not 0.0 <= fault_rate <= 1.0:
        raise ValueError(f"rates must lie in [0, 1], got positive_rate={positive_rate} "
                         f"fault_rate={fault_rate}")
    rng = np.random.default_rng([seed, 0x51A7])
    scanners = site_profiles(sites, seed)
    site_names = list(scanners)
    n_pos = round(positive_rate * studies)
    positive = np.zeros(studies, dtype=bool)
    positive[rng.permutation(studies)[:n_pos]] = True
    leads = [Subtype(int(s)) for s in rng.permutation([int(s) for s in Subtype])]
    n_fault = 0 if fault_rate <= 0 else max(1, round(fault_rate * studies))
    fault_of: dict[int, str] = {}
    kinds = [FAULT_KINDS[i] for i in rng.permutation(len(FAULT_KINDS))]
    for j, idx in enumerate(sorted(rng.permutation(studies)[:n_fault].tolist())):
        fault_of[idx] = kinds[j % len(kinds)]
    nights = default_nights(studies) if nights is None else int(nights)
    if nights < 1:
        raise ValueError(f"nights must be >= 1, got {nights}")
    plans = []
    k_pos = 0
    site_count = dict.fromkeys(site_names, 0)
    for i in range(studies):
        site = site_names[i % sites]
        profile = scanners[site][site_count[site] % 2]
        site_count[site] += 1
        lead = None
        if positive[i]:
            lead = leads[k_pos % len(leads)]
            k_pos += 1
        day = FIRST_NIGHT + dt.timedelta(days=int(rng.integers(0, nights)))
        secs = int(rng.integers(0, 86400))
        age = int(np.clip(rng.normal(62, 17), 18, 99))
        study_uid = _uid(seed, "study", i)
        plans.append(StudyPlan(
            index=i,
            seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]),
            site=site,
            profile_key=profile.key,
            study_uid=study_uid,
            localizer_uid=_uid(seed, "series", i, 1),
            soft_uid=_uid(seed, "series", i, 2),
            bone_uid=_uid(seed, "series", i, 3),
            frame_uid=_uid(seed, "frame", i),
            patient_id=f"SYN{seed % 1000:03d}{i:05d}",
            patient_name=f"SYNTH^PATIENT{i:04d}",
            patient_sex="F" if rng.random() < 0.48 else "M",
            patient_age=age,
            accession=f"A{seed % 100:02d}{i:06d}",
            study_date=day.strftime("%Y%m%d"),
            study_time=f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}",
            positive=bool(positive[i]),
            lead=lead,
            fault=fault_of.get(i),
            matrix=matrix,
            strong_mimics=not positive[i] and rng.random() < 0.7,
        ))
    return plans
