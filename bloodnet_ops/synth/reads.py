"""Radiology reads for the synthetic studies: what the audit compares the model with.

Readers are good but not perfect: a positive is missed with ``miss_rate``, a negative is
over-called with ``false_positive_rate`` (often a calcification or a dense sinus), and a few reads
arrive from the RIS without a StudyInstanceUID, only the accession number.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

READS_HEADER = ("study_uid", "accession_number", "site", "read_date", "reader", "ich",
                "subtypes", "report")


@dataclass(frozen=True)
class LesionNote:
    """What a reader would say about one lesion."""

    subtype: str  #: EDH, SDH, SAH, IPH, IVH
    kind: str
    side: float
    size_mm: float  #: maximal thickness (EDH/SDH) or diameter (IPH)
    volume_ml: float


@dataclass(frozen=True)
class StudyTruth:
    """The facts a read is written from."""

    study_uid: str
    accession: str
    site: str
    study_date: str  #: YYYYMMDD
    subtypes: tuple[str, ...]
    notes: tuple[LesionNote, ...]
    midline_shift: float


@dataclass(frozen=True)
class Read:
    study_uid: str
    accession_number: str
    site: str
    read_date: str  #: ISO date
    reader: str
    ich: int
    subtypes: str  #: ';'-joined
    report: str

    def row(self) -> tuple[str, ...]:
        return (self.study_uid, self.accession_number, self.site, self.read_date, self.reader,
                str(self.ich), self.subtypes, self.report)


_NEGATIVE = (
    "No acute intracranial hemorrhage.",
    "No acute intracranial abnormality. Age-appropriate volume loss.",
    "Unremarkable non-contrast CT of the head.",
    "No hemorrhage, mass effect or midline shift.",
    "No acute hemorrhage. Physiologic pineal and choroid plexus calcifications.",
    "Mild chronic small vessel ischemic changes. No acute hemorrhage.",
)
_SIDE = {1.0: "left", -1.0: "right", 0.0: "bilateral"}
_PLACE = {"temporal": "temporal", "frontal": "frontal", "parietal": "parietal",
          "occipital": "occipital", "convexity": "frontoparietal convexity",
          "falcine": "interhemispheric (parafalcine)", "tentorial": "tentorial",
          "deep": "basal ganglia", "lobar": "lobar", "cerebellar": "cerebellar",
          "pontine": "pontine", "basal": "basal cisterns", "sylvian": "Sylvian fissure",
          "layering": "occipital horns", "cast": "ventricular system",
          "contusion": "frontotemporal (contusions)", "perimesencephalic": "perimesencephalic cisterns",
          "interhemispheric": "interhemispheric fissure"}


def _sentence(n: LesionNote) -> str:
    side = _SIDE.get(float(np.sign(n.side)), "")
    place = _PLACE.get(n.kind, n.kind)
    if n.subtype == "EDH":
        return f"Acute {side} {place} epidural hematoma, up to {n.size_mm:.0f} mm thick."
    if n.subtype == "SDH":
        return f"Acute {side} {place} subdural hematoma, maximal thickness {n.size_mm:.0f} mm."
    if n.subtype == "SAH":
        where = place if n.kind != "sylvian" else f"{side} {place}"
        where = where if n.kind != "convexity" else f"{side} convexity sulci"
        return f"Subarachnoid hemorrhage in the {where}."
    if n.subtype == "IPH":
        return (f"Acute {side} {place} intraparenchymal hemorrhage of about {n.volume_ml:.1f} mL "
                "with surrounding edema.")
    return f"Intraventricular hemorrhage layering in the {place}."


def make_reads(
    truths: list[StudyTruth], *, seed: int, miss_rate: float, false_positive_rate: float = 0.02,
    no_uid_rate: float = 0.04,
) -> tuple[list[Read], dict[str, int]]:
    """One read per study; returns the reads and counts of misses / over-calls / missing UIDs."""
    rng = np.random.default_rng([seed, 0x2EAD])
    readers = [f"reader-{i:02d}" for i in range(1, 8)]
    counts = {"reads": 0, "reads_missed": 0, "reads_false_positive": 0, "reads_without_uid": 0}
    out = []
    for t in truths:
        day = dt.datetime.strptime(t.study_date, "%Y%m%d").date()
        day += dt.timedelta(days=int(rng.random() < 0.3))
        subtypes = list(t.subtypes)
        if subtypes and rng.random() < miss_rate:
            counts["reads_missed"] += 1
            ich, subs, report = 0, [], str(rng.choice(_NEGATIVE))
        elif subtypes:
            ich, subs = 1, subtypes
            report = " ".join(_sentence(n) for n in t.notes)
            if abs(t.midline_shift) >= 2:
                report += f" {abs(t.midline_shift):.0f} mm midline shift."
        elif rng.random() < false_positive_rate:
            counts["reads_false_positive"] += 1
            ich, subs = 1, ["SAH" if rng.random() < 0.5 else "SDH"]
            report = ("Possible small subarachnoid hemorrhage versus dense vessel; correlate."
                      if subs == ["SAH"] else "Questionable thin subdural collection.")
        else:
            ich, subs, report = 0, [], str(rng.choice(_NEGATIVE))
        uid = t.study_uid
        if rng.random() < no_uid_rate:
            uid = ""
            counts["reads_without_uid"] += 1
        out.append(Read(uid, t.accession, t.site, day.isoformat(),
                        readers[int(rng.integers(0, len(readers)))], ich, ";".join(subs),
                        report))
    counts["reads"] = len(out)
    return out, counts
