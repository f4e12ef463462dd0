"""The drift alert webhook against a real HTTP server on 127.0.0.1 (http.server in a thread)."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from analytics_helpers import fresh_database, site_specs, write_studies
from sqlalchemy import text

from bloodnet_ops.db.session import make_engine
from bloodnet_ops.drift.alerts import Alert, post_webhook, webhook_payload
from bloodnet_ops.drift.monitor import run_drift


class _Receiver(BaseHTTPRequestHandler):
    """Stores each POST; answers with the next queued status (default 200)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server = self.server
        server.requests.append({"path": self.path, "body": body,
                                "content_type": self.headers.get("Content-Type")})
        status = server.statuses.pop(0) if server.statuses else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.requests = []
    server.statuses = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/hooks/bloodnet"


ALERT = Alert("site-d", "metadata", "kernel", "PSI", 7.5, 0.25, 1e-9)


def test_post_delivers_the_json_payload(receiver: ThreadingHTTPServer) -> None:
    payload = webhook_payload([ALERT], drift_run_id=3)
    assert post_webhook(payload, _url(receiver)) == "sent"
    (req,) = receiver.requests
    assert req["path"] == "/hooks/bloodnet" and req["content_type"] == "application/json"
    doc = json.loads(req["body"])
    assert doc["drift_run_id"] == 3 and doc["n_alerts"] == 1
    assert doc["alerts"][0] == {"site": "site-d", "metric": "metadata.kernel",
                                "family": "metadata", "feature": "kernel", "statistic": "PSI",
                                "value": 7.5, "threshold": 0.25, "p_value": 1e-9}
    assert "site-d" in doc["text"]


def test_post_retries_server_errors_then_succeeds(receiver: ThreadingHTTPServer) -> None:
    receiver.statuses = [503, 500]
    assert post_webhook({"x": 1}, _url(receiver), backoff=0.01) == "sent"
    assert len(receiver.requests) == 3


def test_post_gives_up_on_a_client_error_without_retrying(receiver: ThreadingHTTPServer) -> None:
    receiver.statuses = [400]
    assert post_webhook({"x": 1}, _url(receiver), backoff=0.01) == "failed: HTTP 400"
    assert len(receiver.requests) == 1


def test_post_to_a_dead_server_fails_softly() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    got = post_webhook({"x": 1}, f"http://127.0.0.1:{port}/", attempts=2, backoff=0.01,
                       timeout=1)
    assert got.startswith("failed: ")


def test_post_is_disabled_without_a_url_and_refuses_other_schemes(monkeypatch) -> None:
    monkeypatch.delenv("BLOODNET_ALERT_WEBHOOK", raising=False)
    assert post_webhook({"x": 1}) == "disabled"
    with pytest.raises(ValueError, match="http"):
        post_webhook({"x": 1}, "file:///etc/passwd")


def test_drift_run_posts_its_alerts_to_the_env_webhook_without_phi(
    receiver: ThreadingHTTPServer, pg_server_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(7)
    specs = site_specs(rng, "site-a") + site_specs(rng, "site-d", kernel_change=True)
    for url in fresh_database(pg_server_url, "bloodnet_webhook"):
        write_studies(url, specs)
        monkeypatch.setenv("BLOODNET_ALERT_WEBHOOK", _url(receiver))
        report = run_drift(url, reference=14, recent=7)
        assert report.webhook == "sent"
        (req,) = receiver.requests
        doc = json.loads(req["body"])
        assert doc["drift_run_id"] == report.drift_run_id
        assert {(a["site"], a["metric"], a["statistic"]) for a in doc["alerts"]} == {
            (a.site, a.metric, a.statistic) for a in report.alerts}
        assert ("site-d", "metadata.kernel", "PSI") in {
            (a["site"], a["metric"], a["statistic"]) for a in doc["alerts"]}
        body = req["body"].decode()
        for s in specs:  # no study UID, accession or patient ID in the payload
            assert s.uid not in body and s.accession not in body and f"P-{s.uid}" not in body
        engine = make_engine(url)
        with engine.connect() as conn:
            deliveries = conn.execute(text(
                "SELECT DISTINCT delivery FROM drift_alerts WHERE drift_run_id = :r"),
                {"r": report.drift_run_id}).scalars().all()
        engine.dispose()
        assert deliveries == ["sent"]
