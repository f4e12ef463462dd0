"""The drift monitor: per site, compare a recent window with a reference window.

Families and statistics (every one is stored with its thresholds and status):

========================  ===========================================  =====================
family                    features                                     statistics
========================  ===========================================  =====================
``metadata``              manufacturer, model, kernel, slice            PSI, chi2 (Cramér's V)
                          thickness, kVp, pixel spacing (categories)
``hu``                    air peak, brain median, p01, p99, mean, std   KS
                          of accepted studies
``score``                 the model's probability                       PSI, KS
``positive_rate``         share of scored studies called positive       two_prop, CUSUM
``reject_rate``           share rejected (``any``) and share carrying   two_prop
                          each reason code
========================  ===========================================  =====================

A statistic warns or alerts when its value passes the threshold *and* (for tests with a p-value)
the p-value is under the family-wise level of that status. Requiring both keeps a big but noisy
PSI on a small site, or a tiny but significant shift on a big one, from paging anybody. Windows
with fewer studies than a rule's minimum are stored with a null value and a note, never alerted.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from bloodnet_ops.db import drift as drift_db
from bloodnet_ops.db import findings as findings_db
from bloodnet_ops.db.session import make_engine, session_scope
from bloodnet_ops.drift import stats
from bloodnet_ops.drift.alerts import Alert, log_alert, post_webhook, webhook_payload
from bloodnet_ops.drift.features import (
    HU_FEATURES,
    METADATA_FEATURES,
    StudyPoint,
)
from bloodnet_ops.drift.windows import Windows, WindowSpec, choose_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rule:
    """Thresholds of one statistic. ``value`` is compared by magnitude (signed ones too).

    The p-value gates are family-wise per site: with ``m`` tests that have p-values at a site, a
    statistic passes the gate when ``p < alpha / m`` (Bonferroni), so adding features does not
    add false alarms.
    """

    warn: float
    alert: float
    alpha_warn: float | None = 0.01  #: family-wise p-value gate for warn (None: value alone)
    alpha_alert: float | None = 0.001
    min_reference: int = 20
    min_recent: int = 10
    family_wise: bool = True  #: divide alpha by m (False: the statistic has its own level)

    def status(self, s: stats.Stat, *, m: int = 1) -> str:
        if s.value is None or not math.isfinite(s.value):
            return "ok"
        v = abs(s.value)

        def gate(alpha: float | None) -> bool:
            if alpha is None:
                return True
            level = alpha / max(m, 1) if self.family_wise else alpha
            return s.p_value is not None and s.p_value < level

        if v >= self.alert and gate(self.alpha_alert):
            return "alert"
        if v >= self.warn and gate(self.alpha_warn):
            return "warn"
        return "ok"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """One rule per statistic. Defaults: PSI 0.1/0.25 (the industry convention), KS D 0.15/0.25,
    Cramér's V 0.15/0.3, a 5/10 point change of a rate, and a CUSUM decision interval of 4/5
    sigma gated by its own bootstrap p-value at 0.01/0.001 (a few studies a night make the
    nightly z-scores skewed, so h alone would page a stable site every few weeks)."""

    psi: Rule = Rule(0.10, 0.25)
    chi2: Rule = Rule(0.15, 0.30)
    ks: Rule = Rule(0.15, 0.25)
    two_prop: Rule = Rule(0.05, 0.10)
    cusum: Rule = Rule(4.0, 5.0, family_wise=False)

    def rule(self, statistic: str) -> Rule:
        return {"PSI": self.psi, "chi2": self.chi2, "KS": self.ks, "two_prop": self.two_prop,
                "CUSUM": self.cusum}[statistic]


@dataclass(slots=True)
class DriftStat:
    """One stored statistic (a ``drift_metrics`` row)."""

    site: str
    family: str
    feature: str
    statistic: str
    value: float | None
    p_value: float | None
    threshold_warn: float
    threshold_alert: float
    status: str
    n_reference: int
    n_recent: int
    windows: Windows
    note: str = ""

    @property
    def metric(self) -> str:
        return self.family if self.family == self.feature else f"{self.family}.{self.feature}"

    def contract(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "family": self.family,
            "feature": self.feature,
            "statistic": self.statistic,
            "value": self.value,
            "p_value": self.p_value,
            "threshold": self.threshold_alert,
            "threshold_warn": self.threshold_warn,
            "status": self.status,
            "n_reference": self.n_reference,
            "n_recent": self.n_recent,
            "note": self.note,
        }


@dataclass(slots=True)
class DriftReport:
    """One drift run: statistics per site, the alerts raised, the sites not compared."""

    drift_run_id: int
    run_key: str
    model_version: str | None
    sites: dict[str, list[DriftStat]]
    alerts: list[Alert]
    skipped_sites: dict[str, str] = field(default_factory=dict)  #: site → why
    webhook: str = "disabled"

    def contract(self) -> dict[str, Any]:
        """The issue's drift JSON: ``sites`` (statistics per site) and ``alerts``."""
        return {
            "sites": {s: [m.contract() for m in rows] for s, rows in self.sites.items()},
            "alerts": [a.contract() for a in self.alerts],
            "drift_run_id": self.drift_run_id,
            "run_key": self.run_key,
            "model_version": self.model_version,
            "windows": {
                s: {"reference": [rows[0].windows.reference_from.isoformat(),
                                  rows[0].windows.reference_to.isoformat()],
                    "recent": [rows[0].windows.recent_from.isoformat(),
                               rows[0].windows.recent_to.isoformat()]}
                for s, rows in self.sites.items() if rows
            },
            "skipped_sites": self.skipped_sites,
            "webhook": self.webhook,
        }


class _SiteComparer:
    """Builds the :class:`DriftStat` rows of one site."""

    def __init__(self, site: str, windows: Windows, ref: list[StudyPoint],
                 cur: list[StudyPoint], thresholds: Thresholds) -> None:
        self.site, self.windows, self.ref, self.cur = site, windows, ref, cur
        self.thresholds = thresholds
        self.rows: list[DriftStat] = []
        self._stats: list[tuple[stats.Stat, Rule]] = []

    def add(self, family: str, feature: str, statistic: str, compute: Callable[[], stats.Stat],
            n_ref: int, n_cur: int) -> None:
        rule = self.thresholds.rule(statistic)
        note = ""
        if n_ref < rule.min_reference or n_cur < rule.min_recent:
            s = stats.Stat(math.nan, None, n_ref, n_cur)
            note = (f"insufficient data: reference {n_ref} (min {rule.min_reference}), "
                    f"recent {n_cur} (min {rule.min_recent})")
        else:
            s = compute()
        value = s.value if math.isfinite(s.value) else None
        if s.p_value is not None and not math.isfinite(s.p_value):
            s = stats.Stat(s.value, None, s.n_reference, s.n_recent)  # JSON has no NaN
        if value is None and not note:
            note = "undefined (no values)"
        self.rows.append(DriftStat(
            self.site, family, feature, statistic, value, s.p_value, rule.warn, rule.alert,
            "ok", s.n_reference, s.n_recent, self.windows, note,
        ))
        self._stats.append((s, rule))

    def finish(self) -> list[DriftStat]:
        """Set every status, with the site's number of p-valued tests as the Bonferroni ``m``."""
        m = sum(s.p_value is not None and r.family_wise for s, r in self._stats)
        for row, (s, rule) in zip(self.rows, self._stats, strict=True):
            row.status = rule.status(s, m=m)
        return self.rows

    def metadata(self) -> None:
        for f in METADATA_FEATURES:
            a = [p.metadata[f] for p in self.ref]
            b = [p.metadata[f] for p in self.cur]
            self.add("metadata", f, "PSI", lambda a=a, b=b: stats.psi_categorical(a, b),
                     len(a), len(b))
            self.add("metadata", f, "chi2", lambda a=a, b=b: stats.chi2_categorical(a, b),
                     len(a), len(b))

    def hu(self) -> None:
        ref = [p.hu for p in self.ref if p.hu is not None]
        cur = [p.hu for p in self.cur if p.hu is not None]
        for f in HU_FEATURES:
            a = [h[f] for h in ref if h[f] is not None]
            b = [h[f] for h in cur if h[f] is not None]
            self.add("hu", f, "KS", lambda a=a, b=b: stats.ks(a, b), len(a), len(b))

    def scores(self) -> None:
        a = [p.probability for p in self.ref if p.probability is not None]
        b = [p.probability for p in self.cur if p.probability is not None]
        self.add("score", "probability", "PSI", lambda: stats.psi(a, b), len(a), len(b))
        self.add("score", "probability", "KS", lambda: stats.ks(a, b), len(a), len(b))
        ref_pos = sum(bool(p.positive) for p in self.ref if p.probability is not None)
        cur_pos = sum(bool(p.positive) for p in self.cur if p.probability is not None)
        self.add("positive_rate", "positive_rate", "two_prop",
                 lambda: stats.two_proportion(ref_pos, len(a), cur_pos, len(b)), len(a), len(b))
        nightly: dict[date, list[int]] = defaultdict(lambda: [0, 0])
        for p in self.cur:
            if p.probability is not None:
                nightly[p.night][0] += bool(p.positive)
                nightly[p.night][1] += 1
        counts = [tuple(nightly[d]) for d in sorted(nightly)]
        p0 = ref_pos / len(a) if a else math.nan
        self.add("positive_rate", "positive_rate", "CUSUM",
                 lambda: stats.cusum(counts, p0, n_reference=len(a)), len(a), len(b))

    def rejects(self) -> None:
        n_ref, n_cur = len(self.ref), len(self.cur)
        ref_rej = sum(p.verdict == "reject" for p in self.ref)
        cur_rej = sum(p.verdict == "reject" for p in self.cur)
        self.add("reject_rate", "any", "two_prop",
                 lambda: stats.two_proportion(ref_rej, n_ref, cur_rej, n_cur), n_ref, n_cur)
        reasons = sorted({r for p in [*self.ref, *self.cur] for r in p.reasons})
        for reason in reasons:
            x_ref = sum(reason in p.reasons for p in self.ref)
            x_cur = sum(reason in p.reasons for p in self.cur)
            self.add("reject_rate", reason, "two_prop",
                     lambda x=x_ref, y=x_cur: stats.two_proportion(x, n_ref, y, n_cur),
                     n_ref, n_cur)


def site_windows(
    nights: Mapping[str, Sequence[date]], spec: WindowSpec
) -> tuple[dict[str, Windows], dict[str, str]]:
    """The windows of every site with enough nights; the others with the reason."""
    windows: dict[str, Windows] = {}
    skipped: dict[str, str] = {}
    for site in sorted(nights):
        w = choose_windows(nights[site], spec)
        if w is None:
            skipped[site] = (f"not enough nights ({len(set(nights[site]))}) for the reference and "
                             "recent windows")
        else:
            windows[site] = w
    return windows, skipped


def compare_sites(
    points: Sequence[StudyPoint], windows: Mapping[str, Windows], thresholds: Thresholds
) -> dict[str, list[DriftStat]]:
    """Every statistic of every site in ``windows``, from that site's points."""
    by_site: dict[str, list[StudyPoint]] = defaultdict(list)
    for p in points:
        by_site[p.site].append(p)
    out: dict[str, list[DriftStat]] = {}
    for site in sorted(windows):
        w = windows[site]
        ref = [p for p in by_site[site] if w.which(p.night) == "reference"]
        cur = [p for p in by_site[site] if w.which(p.night) == "recent"]
        cmp = _SiteComparer(site, w, ref, cur, thresholds)
        cmp.metadata()
        cmp.hu()
        cmp.scores()
        cmp.rejects()
        out[site] = cmp.finish()
    return out


def run_drift(
    db_url: str,
    *,
    reference: WindowSpec | int = 14,
    recent: int | None = None,
    thresholds: Thresholds | None = None,
    model_version: str | None = None,
    run_key: str | None = None,
    webhook_url: str | None = None,
) -> DriftReport:
    """Compute, store and alert on drift for every site.

    Parameters
    ----------
    db_url
        The results database.
    reference
        A :class:`WindowSpec`, or the number of first nights that form the reference.
    recent
        Number of last nights in the recent window (overrides the spec's ``recent_nights``).
    thresholds
        Per-statistic rules (default :class:`Thresholds`).
    model_version
        Whose scores to compare (default: that of the newest finding).
    run_key
        Identifies the run; the same key replaces its statistics (default: a fresh one).
    webhook_url
        Overrides ``BLOODNET_ALERT_WEBHOOK``.
    """
    spec = (reference if isinstance(reference, WindowSpec)
            else WindowSpec(reference_nights=reference))
    if recent is not None:
        spec = replace(spec, recent_nights=recent)
    thresholds = thresholds or Thresholds()
    run_key = run_key or f"drift-{uuid.uuid4().hex[:12]}"
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            version = model_version or findings_db.latest_model_version(session)
            windows, skipped = site_windows(drift_db.site_nights(session), spec)
            points = drift_db.load_points(session, model_version=version, windows=windows)
            sites = compare_sites(points, windows, thresholds)
            all_rows = [m for ms in sites.values() for m in ms]
            counts = {s: sum(m.status == s for m in all_rows) for s in ("ok", "warn", "alert")}
            counts["sites"] = len(sites)
            params = {"reference_nights": spec.reference_nights,
                      "recent_nights": spec.recent_nights,
                      "reference_from": spec.reference_from, "reference_to": spec.reference_to,
                      "model_version": version, "skipped_sites": skipped}
            params = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in params.items()}
            run_id, stored = drift_db.store_drift_run(session, run_key=run_key, params=params,
                                                      sites=sites, counts=counts)
            alerts = [
                (mid, Alert(m.site, m.family, m.feature, m.statistic, float(m.value),
                            m.threshold_alert, m.p_value))
                for mid, m in stored if m.status == "alert"
            ]
            if alerts:  # the row is the record; the webhook outcome is filled in below
                drift_db.insert_alerts(session, drift_run_id=run_id, alerts=alerts)
            for _, alert in alerts:
                log_alert(alert, drift_run_id=run_id)
            for m in all_rows:
                if m.status == "warn":
                    log.info("drift_warn run=%s site=%s metric=%s statistic=%s value=%.4g",
                             run_id, m.site, m.metric, m.statistic, m.value)
        # Deliver outside the transaction: a slow webhook must not hold database locks.
        delivery = "no alerts"
        if alerts:
            delivery = post_webhook(webhook_payload([a for _, a in alerts], drift_run_id=run_id),
                                    webhook_url)
            with session_scope(engine) as session:
                drift_db.set_alert_delivery(session, drift_run_id=run_id, delivery=delivery)
    finally:
        engine.dispose()
    log.info("drift run=%s sites=%d counts=%s", run_key, len(sites), counts)
    return DriftReport(run_id, run_key, version, sites, [a for _, a in alerts], skipped,
                       delivery)
