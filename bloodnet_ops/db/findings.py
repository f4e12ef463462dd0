"""``findings``: one row per scored series and model version, with provenance."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from bloodnet_ops import PREPROCESSING_VERSION
from bloodnet_ops.db.models import Finding
from bloodnet_ops.db.session import with_retries
from bloodnet_ops.db.upsert import jsonable, site_of, table_of, upsert
from bloodnet_ops.pseudonym import pseudonymise
from bloodnet_ops.records import StudyFinding, StudyResult


@dataclass(slots=True)
class FindingRow:
    """One row of ``findings`` (every column except the surrogate id and the timestamps)."""

    series_uid: str
    model_version: str
    preprocessing_version: str
    study_uid: str
    site: str
    patient_key: str  #: pseudonym, never a raw PatientID
    probability: float
    positive: bool
    volume_ml: float
    weights_sha256: str
    run_id: str
    subtypes: dict[str, float] = field(default_factory=dict)
    input_etags: dict[str, str] = field(default_factory=dict)  #: object key -> ETag
    load_seconds: float = 0.0
    infer_seconds: float = 0.0
    seg_key: str | None = None
    sr_key: str | None = None

    @classmethod
    def from_finding(
        cls,
        finding: StudyFinding,
        study: StudyResult,
        *,
        model_version: str,
        weights_sha256: str,
        run_id: str,
        input_etags: dict[str, str] | None = None,
        preprocessing_version: str = PREPROCESSING_VERSION,
        seg_key: str | None = None,
        sr_key: str | None = None,
        patient_key: str | None = None,
    ) -> FindingRow:
        """Build the row from the model's output and the study it scored (pseudonymising its
        PatientID, unless the pseudonym is given: the nightly job reads it from ``studies``)."""
        return cls(
            series_uid=finding.series_uid,
            model_version=model_version,
            preprocessing_version=preprocessing_version,
            study_uid=finding.study_uid,
            site=site_of(study),
            patient_key=patient_key if patient_key is not None else pseudonymise(study.patient_id),
            probability=float(finding.probability),
            positive=bool(finding.positive),
            volume_ml=float(finding.volume_ml),
            weights_sha256=weights_sha256,
            run_id=run_id,
            subtypes={k: float(v) for k, v in finding.subtypes.items()},
            input_etags=dict(input_etags or {}),
            load_seconds=float(finding.load_seconds),
            infer_seconds=float(finding.infer_seconds),
            seg_key=seg_key,
            sr_key=sr_key,
        )


FINDING_KEY = ("series_uid", "model_version", "preprocessing_version")


def upsert_findings(engine: Engine, rows: Sequence[FindingRow]) -> int:
    """Insert or update findings keyed on (series_uid, model_version, preprocessing_version);
    ``created_at`` is kept, ``updated_at`` moves. Returns the number of distinct keys written."""
    if not rows:
        return 0
    payload = []
    for r in rows:
        d = dataclasses.asdict(r)
        d["subtypes"] = jsonable(d["subtypes"])
        d["probability"] = float(d["probability"])
        d["volume_ml"] = float(d["volume_ml"])
        payload.append(d)

    def _do() -> int:
        with engine.begin() as conn:
            return upsert(conn, Finding, payload, FINDING_KEY, touch={"updated_at": "now()"})

    return with_retries(_do)


def findings_for_run(engine: Engine, run_id: str) -> list[FindingRow]:
    """The findings a run wrote, ordered by study and series UID."""
    t = table_of(Finding)
    names = [f.name for f in dataclasses.fields(FindingRow)]
    with engine.connect() as conn:
        rows = conn.execute(
            select(*(t.c[n] for n in names))
            .where(t.c.run_id == run_id)
            .order_by(t.c.study_uid, t.c.series_uid)
        )
        return [FindingRow(**dict(r._mapping)) for r in rows]


def latest_model_version(conn: Any) -> str | None:
    """The model version of the most recently written finding (a Session or a Connection)."""
    t = table_of(Finding)
    return conn.execute(
        select(t.c.model_version).order_by(t.c.updated_at.desc(), t.c.id.desc()).limit(1)
    ).scalar_one_or_none()
