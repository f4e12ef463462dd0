"""Record a reviewer's adjudication of a worklist item (the ``bloodnet adjudicate`` command).

One adjudication is kept per (study, kind); recording another replaces it (the reviewer changed
their mind, or a second reader settled it). The next audit run uses it through
:func:`bloodnet_ops.audit.figures.reference_label`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from bloodnet_ops.db import audit as audit_db
from bloodnet_ops.db.models_audit import ADJUDICATION_OUTCOMES, AUDIT_KINDS
from bloodnet_ops.db.session import make_engine, session_scope
from bloodnet_ops.pseudonym import pseudonymise

log = logging.getLogger(__name__)


class NotOnWorklist(LookupError):
    """The study was never put on the worklist with that kind."""


@dataclass(frozen=True, slots=True)
class AdjudicationRecord:
    study_uid: str
    kind: str
    outcome: str
    reviewer_key: str
    note: str
    updated_at: datetime

    def as_dict(self) -> dict[str, str]:
        return {"study_uid": self.study_uid, "kind": self.kind, "outcome": self.outcome,
                "reviewer_key": self.reviewer_key, "note": self.note,
                "updated_at": self.updated_at.isoformat()}


def adjudicate(
    db_url: str,
    study_uid: str,
    *,
    kind: str,
    outcome: str,
    reviewer: str | None = None,
    note: str = "",
    require_worklist: bool = True,
) -> AdjudicationRecord:
    """Store (or replace) the adjudication of ``study_uid`` for worklist ``kind``.

    Raises
    ------
    ValueError
        ``kind`` or ``outcome`` is not one of the allowed values.
    NotOnWorklist
        ``require_worklist`` and no audit run ever listed the study with that kind.
    """
    if kind not in AUDIT_KINDS:
        raise ValueError(f"kind must be one of {AUDIT_KINDS}, got {kind!r}")
    if outcome not in ADJUDICATION_OUTCOMES:
        raise ValueError(f"outcome must be one of {ADJUDICATION_OUTCOMES}, got {outcome!r}")
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            if require_worklist and not audit_db.on_worklist(session, study_uid=study_uid,
                                                             kind=kind):
                raise NotOnWorklist(f"study {study_uid} is not on any worklist as {kind}")
            values = {"study_uid": study_uid, "kind": kind, "outcome": outcome,
                      "reviewer_key": pseudonymise(reviewer), "note": note}
            updated_at = audit_db.upsert_adjudication(session, **values)
    finally:
        engine.dispose()
    log.info("adjudication kind=%s outcome=%s", kind, outcome)
    return AdjudicationRecord(study_uid, kind, outcome, values["reviewer_key"], note, updated_at)
