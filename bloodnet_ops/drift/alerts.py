"""Drift alerts: a row in ``drift_alerts``, a structured log line, and an optional webhook POST.

The webhook URL comes from ``BLOODNET_ALERT_WEBHOOK``. The payload carries sites, metric names and
numbers only: no patient identifiers, no study UIDs. Delivery is best effort with a timeout and a
few retries; a webhook that is down never fails the drift run (the row and the log line are the
record), and the outcome is stored on the alert row.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

WEBHOOK_ENV = "BLOODNET_ALERT_WEBHOOK"
#: Seconds per attempt; a slow chat server must not hold the drift task for long.
WEBHOOK_TIMEOUT_S = 5.0
WEBHOOK_ATTEMPTS = 3
#: Base of the exponential back-off between attempts, in seconds.
WEBHOOK_BACKOFF_S = 0.5


@dataclass(frozen=True, slots=True)
class Alert:
    """One statistic over its alert threshold at one site (no PHI)."""

    site: str
    family: str  #: metadata | hu | score | positive_rate | reject_rate
    feature: str  #: e.g. "kernel", "probability", a reason code
    statistic: str  #: PSI | KS | chi2 | CUSUM | two_prop
    value: float
    threshold: float
    p_value: float | None = None

    @property
    def metric(self) -> str:
        """``family.feature`` (just ``family`` when they coincide), as in the drift JSON."""
        return self.family if self.family == self.feature else f"{self.family}.{self.feature}"

    def contract(self) -> dict[str, Any]:
        """The ``alerts`` item of the drift JSON contract (no PHI)."""
        return {
            "site": self.site,
            "metric": self.metric,
            "family": self.family,
            "feature": self.feature,
            "statistic": self.statistic,
            "value": self.value,
            "threshold": self.threshold,
            "p_value": self.p_value,
        }


def log_alert(alert: Alert, *, drift_run_id: int | None) -> None:
    """One structured line per alert (key=value pairs so log shippers can parse it)."""
    log.warning(
        "drift_alert run=%s site=%s metric=%s statistic=%s value=%.4g threshold=%.4g",
        drift_run_id,
        alert.site,
        alert.metric,
        alert.statistic,
        alert.value,
        alert.threshold,
    )


def webhook_payload(alerts: Sequence[Alert], *, drift_run_id: int | None) -> dict[str, Any]:
    """The JSON body POSTed to the webhook."""
    return {
        "source": "bloodnet-drift-monitor",
        "drift_run_id": drift_run_id,
        "n_alerts": len(alerts),
        "alerts": [a.contract() for a in alerts],
        "text": "; ".join(
            f"{a.site}: {a.metric} {a.statistic}={a.value:.3g} (alert ≥ {a.threshold:g})"
            for a in alerts
        ),
    }


def post_webhook(
    payload: dict[str, Any],
    url: str | None = None,
    *,
    timeout: float = WEBHOOK_TIMEOUT_S,
    attempts: int = WEBHOOK_ATTEMPTS,
    backoff: float = WEBHOOK_BACKOFF_S,
) -> str:
    """POST ``payload`` as JSON; returns ``"sent"``, ``"disabled"`` or ``"failed: <why>"``.

    Retries on connection errors and on 5xx/429 with exponential back-off; a 4xx other than 429 is
    final (resending the same body will not help).
    """
    if url is None:
        from bloodnet_ops.settings import current

        url = current().alert_webhook
    if not url:
        return "disabled"
    if not url.startswith(("http://", "https://")):
        scheme = url.split(":", 1)[0]
        raise ValueError(f"{WEBHOOK_ENV} must be an http(s) URL, got scheme {scheme!r}")
    body = json.dumps(payload).encode()
    why = ""
    for attempt in range(1, attempts + 1):
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                resp.read()
            log.info("drift webhook delivered attempt=%d", attempt)
            return "sent"
        except urllib.error.HTTPError as exc:
            why = f"HTTP {exc.code}"
            if exc.code < 500 and exc.code != 429:
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            why = type(getattr(exc, "reason", exc)).__name__
        log.warning("drift webhook attempt=%d/%d failed: %s", attempt, attempts, why)
        if attempt < attempts:
            time.sleep(backoff * 2 ** (attempt - 1))
    return f"failed: {why}"
