"""What inference reads from validation, and what it records when a study fails after it.

Validation chose the series and stored its object keys in slice order with their ETags
(``validation_results.series_objects``, migration 0004). :func:`scoring_items` hands them to the
nightly job, so a study is fetched once and parsed once, and nothing is listed or re-read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, and_, func, select

from bloodnet_ops.db.models import Study, ValidationResult
from bloodnet_ops.db.upsert import MANIFEST_CHUNK, chunked
from bloodnet_ops.db.validation import record_validation
from bloodnet_ops.reasons import Reason, Verdict
from bloodnet_ops.records import ObjectRef, StudyResult, ValidationReport


@dataclass(frozen=True, slots=True)
class ScoringItem:
    """One study to score, as its latest validation left it."""

    study_uid: str
    series_uid: str | None
    site: str
    verdict: Verdict
    reasons: tuple[Reason, ...]
    #: ``(key, etag)`` of the chosen series in slice order; ``None`` when validated by a
    #: version before migration 0004 (then the study must be validated again)
    series_objects: tuple[tuple[str, str], ...] | None
    patient_key: str  #: the pseudonym stored in ``studies``

    @property
    def scorable(self) -> bool:
        return self.verdict != Verdict.REJECT and bool(self.series_uid) and bool(
            self.series_objects)

    @property
    def series_keys(self) -> list[str]:
        return [key for key, _ in self.series_objects or ()]

    def as_study(self, keys: Sequence[str] = ()) -> StudyResult:
        """The :class:`StudyResult` the writers take (no raw patient fields: none are read)."""
        return StudyResult(
            study_uid=self.study_uid, series_uid=self.series_uid, site=self.site,
            verdict=self.verdict, reasons=list(self.reasons), keys=list(keys or self.series_keys),
            series_keys=self.series_keys, n_slices=len(self.series_objects or ()),
        )


def scoring_items(engine: Engine, study_uids: Sequence[str]) -> list[ScoringItem]:
    """The latest verdict of each study in ``study_uids`` with its stored series, by study UID;
    a study that has no verdict (deleted since) is left out."""
    vr, st = ValidationResult.__table__, Study.__table__
    out: list[ScoringItem] = []
    with engine.connect() as conn:
        for chunk in chunked(sorted(set(study_uids)), MANIFEST_CHUNK):
            latest = (select(vr.c.study_uid, func.max(vr.c.validated_at).label("at"))
                      .where(vr.c.study_uid.in_(chunk)).group_by(vr.c.study_uid).subquery())
            rows = conn.execute(
                select(vr.c.study_uid, vr.c.series_uid, vr.c.verdict, vr.c.reasons, vr.c.site,
                       vr.c.series_objects, st.c.patient_key)
                .join(latest, and_(vr.c.study_uid == latest.c.study_uid,
                                   vr.c.validated_at == latest.c.at))
                .join(st, st.c.study_uid == vr.c.study_uid)
                .order_by(vr.c.study_uid)
            ).all()
            out.extend(
                ScoringItem(
                    study_uid=r.study_uid, series_uid=r.series_uid, site=r.site,
                    verdict=Verdict(r.verdict), reasons=tuple(Reason(x) for x in r.reasons),
                    series_objects=(tuple((k, e) for k, e in r.series_objects)
                                    if r.series_objects else None),
                    patient_key=r.patient_key,
                )
                for r in rows
            )
    return out


def record_scoring_failures(
    engine: Engine, *, source_uri: str, run_id: str,
    failures: Sequence[tuple[ScoringItem, Reason, str]],
) -> None:
    """Record studies that failed at load or inference as rejected for ``run_id``: the verdict,
    a quarantine row with the reason and detail, and the manifest status of all their objects.
    The studies' own rows (pseudonyms, series) are left as validation wrote them."""
    if not failures:
        return
    objects, by_study = _objects_of(engine, source_uri, [i.study_uid for i, _, _ in failures])
    studies = []
    for item, why, detail in failures:
        study = item.as_study(by_study.get(item.study_uid, ()))
        study.verdict = Verdict.REJECT
        study.reasons = list(dict.fromkeys([*item.reasons, why]))
        study.detail = detail
        studies.append(study)
    record_validation(engine, ValidationReport(studies, [], objects), source_uri=source_uri,
                      run_id=run_id, studies_known=True)


def _objects_of(engine: Engine, source_uri: str, uids: Sequence[str]
                ) -> tuple[list[ObjectRef], dict[str, list[str]]]:
    """The manifest's objects of these studies, and their keys by study (one query a chunk)."""
    from bloodnet_ops.db.models import ObjectRecord

    t = ObjectRecord.__table__
    objects: list[ObjectRef] = []
    by_study: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for chunk in chunked(sorted(set(uids)), MANIFEST_CHUNK):
            for r in conn.execute(select(t.c.key, t.c.etag, t.c.size, t.c.study_uid).where(
                    t.c.source_uri == source_uri, t.c.study_uid.in_(chunk)).order_by(t.c.key)):
                objects.append(ObjectRef(r.key, r.etag, int(r.size)))
                by_study.setdefault(r.study_uid, []).append(r.key)
    return objects, by_study


def studies_to_score(engine: Engine, *, run_id: str, backlog: bool = True) -> list[str]:
    """Study UIDs this run accepted, plus (``backlog``) accepted studies of the same source
    whose latest verdict has no finding at all (a night whose inference died after
    validation), sorted."""
    from bloodnet_ops.db.models import Finding, InferenceRun

    vr, fi, runs = ValidationResult.__table__, Finding.__table__, InferenceRun.__table__
    accepted = vr.c.verdict.in_([Verdict.ACCEPT.value, Verdict.ACCEPT_WITH_WARNING.value])
    with engine.connect() as conn:
        uids = set(conn.execute(select(vr.c.study_uid).where(vr.c.run_id == run_id, accepted))
                   .scalars())
        if backlog:
            source = select(runs.c.source_uri).where(runs.c.run_id == run_id).scalar_subquery()
            latest = (
                select(vr.c.study_uid, func.max(vr.c.validated_at).label("at"))
                .where(vr.c.source_uri == source).group_by(vr.c.study_uid).subquery()
            )
            uids.update(conn.execute(
                select(vr.c.study_uid)
                .join(latest, and_(vr.c.study_uid == latest.c.study_uid,
                                   vr.c.validated_at == latest.c.at))
                .where(accepted, ~select(fi.c.id).where(fi.c.series_uid == vr.c.series_uid)
                       .exists())
            ).scalars())
    return sorted(uids)
