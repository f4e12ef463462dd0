
"""The dashboards over a real PostgreSQL: auth (standalone and inside Airflow), page numbers against
the database, filters, sorting and paging, escaping, no PHI, read-only access, the views.

The browser-level checks (charts drawn, console clean, screenshots) are in
``test_dashboard_browser.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from dashboard_fixtures import REPO, TOKEN, DashboardDB, free_port
from sqlalchemy import create_engine, text

try:
    import dashboard_seed as seed
except ImportError:
    from tests import dashboard_seed as seed

AUTH = {"Authorization": f"Bearer {TOKEN}"}
PAGES = ("overview", "quality", "audit", "drift", "models")


class TableRows(HTMLParser):
    """Rows of one ``<table id=...>``: each row's ``data-*`` attributes plus ``data-col`` cells."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.inside = False
        self.rows: list[dict[str, str]] = []
        self._col: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr" and any(k.startswith("data-") for k in a):
            self.rows.append({k[5:]: v or "" for k, v in a.items() if k.startswith("data-")})
        elif self.inside and tag == "td" and self.rows and "data-col" in a:
            self._col = a["data-col"]
            self.rows[-1][self._col] = ""

    def handle_data(self, data: str) -> None:
        if self._col is not None:
            self.rows[-1][self._col] += data.strip()

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._col = None
        elif tag == "table" and self.inside:
            self.inside = False


def table(html: str, table_id: str) -> list[dict[str, str]]:
    parser = TableRows(table_id)
    parser.feed(html)
    return parser.rows


@pytest.fixture(scope="module")
def client(dashboard_db: DashboardDB):
    from fastapi.testclient import TestClient

    from bloodnet_ops.dashboard.app import create_app

    with TestClient(create_app(dashboard_db.url, token=TOKEN)) as c:
        yield c


@pytest.fixture(scope="module")
def db(dashboard_db: DashboardDB):
    engine = create_engine(dashboard_db.url)
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def get(client, path: str) -> str:
    r = client.get(path, headers=AUTH)
    assert r.status_code == 200, (path, r.status_code, r.text[:500])
    return r.text


# ------------------------------------------------------------------ authentication
@pytest.mark.parametrize("path", [*PAGES, "rejects?night=2026-03-14", "static/plotly.min.js",
                                  "static/dashboard.css"])
def test_refuses_requests_without_the_token(client, path: str) -> None:
    client.cookies.clear()
    assert client.get(f"/{path}").status_code == 401
    assert client.get(f"/{path}", headers={"Authorization": "Bearer wrong-token-wrong-token"}
                      ).status_code == 403
    client.cookies.set("bloodnet_dashboard_token", "wrong-token-wrong-token")
    assert client.get(f"/{path}").status_code == 403
    client.cookies.clear()
    assert client.get(f"/{path}", headers=AUTH).status_code == 200


def test_token_in_the_query_becomes_an_httponly_cookie(client) -> None:
    client.cookies.clear()
    r = client.get(f"/audit?site=site-a&token={TOKEN}", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/audit?site=site-a"  # the token leaves the address bar
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/audit?site=site-a").status_code == 200  # the cookie now authenticates
    client.cookies.clear()
    assert client.get(f"/overview?token=not-{TOKEN}", follow_redirects=False).status_code == 403


def test_health_is_open_and_pages_carry_security_headers(client) -> None:
    client.cookies.clear()
    assert client.get("/healthz").text == "ok"
    r = client.get("/overview", headers=AUTH)
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert "app;dur=" in r.headers["server-timing"]


def test_app_without_any_credential_is_refused_at_construction(dashboard_db: DashboardDB) -> None:
    from bloodnet_ops.dashboard.app import create_app

    with pytest.raises(ValueError, match="token or an authenticator"):
        create_app(dashboard_db.url)
    with pytest.raises(ValueError, match="at least 16"):
        create_app(dashboard_db.url, token="short")


def test_cli_refuses_to_serve_the_network_without_a_token() -> None:
    from bloodnet_ops.cli.dashcmd import check_token

    env = {k: v for k, v in os.environ.items() if k != "BLOODNET_DASHBOARD_TOKEN"}
    res = subprocess.run(
        [str(Path(sys.executable).with_name("bloodnet")), "dashboard", "--db",
         "postgresql://nobody@127.0.0.1:1/none", "--host", "0.0.0.0", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2
    assert "without BLOODNET_DASHBOARD_TOKEN" in res.stderr
    assert check_token(None, "127.0.0.1") is None
    assert check_token(None, "::1") is None
    assert check_token(TOKEN, "0.0.0.0") == TOKEN
    with pytest.raises(ValueError):
        check_token(None, "dashboards.example.org")


def test_cli_serves_standalone_behind_the_token(dashboard_db: DashboardDB) -> None:
    port = free_port()
    env = {**os.environ, "BLOODNET_DASHBOARD_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("bloodnet")), "dashboard", "--db", dashboard_db.url,
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "bloodnet dashboard did not start in 90 s"
            time.sleep(0.3)
        assert httpx.get(f"{base}/overview", timeout=30).status_code == 401
        r = httpx.get(f"{base}/overview", headers=AUTH, timeout=30)
        assert r.status_code == 200 and "<h1>Overview</h1>" in r.text
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_plugin_inside_airflow_refuses_unauthenticated_requests(
    airflow_home: Path, dashboard_db: DashboardDB, tmp_path: Path
) -> None:
    out = tmp_path / "probe.json"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(48),
        "BLOODNET_DASHBOARD_DB_URL": dashboard_db.url,
        "BLOODNET_DASHBOARD_TOKEN": TOKEN,
    }
    res = subprocess.run([sys.executable, str(REPO / "tests" / "dashboard_airflow_probe.py"),
                          str(out)], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    probe = json.loads(out.read_text())
    assert probe["anonymous"]["status"] == 401
    assert probe["anonymous_static"]["status"] == 401
    assert probe["garbage_bearer"]["status"] == 403
    assert probe["expired_jwt"]["status"] in (401, 403)
    for accepted in ("jwt_bearer", "jwt_cookie", "dashboard_token"):
        assert probe[accepted] == {"status": 200, "has_title": True}, (accepted, probe[accepted])
    plugin = probe["plugin"]
    assert plugin is not None, "the plugin was not loaded"
    assert probe["plugin_import_errors"] == []
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/bloodnet"
    views = {v["url_route"]: v for v in plugin["external_views"]}
    assert set(views) == {f"bloodnet-{p}" for p in PAGES}
    assert all(not v["href"].startswith("/") and v["destination"] == "nav" for v in views.values())


def test_dashboard_package_does_not_import_airflow() -> None:
    code = ("import sys, bloodnet_ops.dashboard.app, bloodnet_ops.cli.dashcmd; "
            "print(any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.stdout.strip() == "False", res.stderr[-2000:]


# ------------------------------------------------------------------ numbers equal the database
def _site_totals_from_tables(db, start: dt.date, end: dt.date) -> dict[str, dict[str, str]]:
    rows = db.execute(text("""
        SELECT s.site,
               count(*) AS studies,
               count(*) FILTER (WHERE v.verdict = 'accept') AS accepted,
               count(*) FILTER (WHERE v.verdict = 'accept_with_warning') AS warned,
               count(*) FILTER (WHERE v.verdict = 'reject') AS rejected
        FROM validation_results v
        JOIN studies s ON s.study_uid = v.study_uid
        JOIN inference_runs r ON r.run_id = v.run_id
        WHERE (r.started_at AT TIME ZONE 'UTC')::date BETWEEN :a AND :b
        GROUP BY s.site"""), {"a": start, "b": end}).mappings()
    out = {r["site"]: {k: str(r[k]) for k in ("studies", "accepted", "warned", "rejected")}
           for r in rows}
    for r in db.execute(text("""
        SELECT f.site, count(*) AS scored, count(*) FILTER (WHERE f.positive) AS positives,
               array_agg(f.load_seconds + f.infer_seconds) AS seconds
        FROM findings f JOIN inference_runs r ON r.run_id = f.run_id
        WHERE (r.started_at AT TIME ZONE 'UTC')::date BETWEEN :a AND :b
        GROUP BY f.site"""), {"a": start, "b": end}).mappings():
        out[r["site"]].update(scored=str(r["scored"]), positives=str(r["positives"]),
                              median_seconds=f"{statistics.median(r['seconds']):.2f}")
    return out


def test_overview_numbers_equal_the_database(client, db, dashboard_db: DashboardDB) -> None:
    world = dashboard_db.world
    end = world.spec.end
    start = end - dt.timedelta(days=6)
    html = get(client, "/overview?days=7")
    assert f"{start} – {end}" in html
    page = {r["site"]: {k: v for k, v in r.items() if k != "site"}
            for r in table(html, "site-totals")}
    assert page == _site_totals_from_tables(db, start, end)
    # ... and the database holds what the pipeline was given (the seed's plan).
    planned = [p for p in world.studies() if start <= p.night <= end]
    for site in world.spec.sites:
        mine = [p for p in planned if p.site == site]
        assert page[site]["studies"] == str(len(mine))
        assert page[site]["rejected"] == str(sum(p.verdict == "reject" for p in mine))
    last = next(r for r in world.runs if r.night == end)
    assert f'data-value="{len(last.studies)}"' in html.split('id="card-studies"')[1][:200]
    assert "nightly-2026-03-14" in table_html(html, "runs")


def table_html(html: str, table_id: str) -> str:
    return html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]


def test_quality_reasons_equal_the_quarantine(client, db, dashboard_db: DashboardDB) -> None:
    spec = dashboard_db.world.spec
    html = get(client, f"/quality?start={spec.start}&end={spec.end}")
    page = {(r["reason"], r["kind"]): int(r["n"]) for r in table(html, "reasons")}
    expected = {(r, k): n for r, k, n in db.execute(text(
        "SELECT reason, kind, count(*) FROM quarantine GROUP BY reason, kind"))}
    assert page == expected
    assert sum(page.values()) == sum(
        sum(p.verdict == "reject" for p in run.studies) + len(run.unreadable)
        for run in dashboard_db.world.runs)
    # A site filter narrows the failed-expectation list to that site.
    html_b = get(client, f"/quality?site=site-b&start={spec.start}&end={spec.end}")
    assert {r["site"] for r in table(html_b, "failed-expectations")} == {"site-b"}


def test_reject_drilldown_lists_the_nights_rejections(client, db, dashboard_db) -> None:
    world = dashboard_db.world
    night = world.spec.end - dt.timedelta(days=1)  # the night with the markup-bearing study
    html = get(client, f"/rejects?night={night}&site=site-a")
    run = next(r for r in world.runs if r.night == night)
    expected = {p.study_uid for p in run.studies if p.site == "site-a" and p.verdict == "reject"}
    shown = {uid for uid in expected if uid in html}
    assert shown == expected and expected
    assert table_html(html, "quarantine").count("<tr data-kind=") == len(expected)
    # The hostile header value is shown as text, never as markup.
    assert "&lt;script&gt;window.__pwned" in html
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    # A night with unreadable objects shows them hashed, never by their (PHI-bearing) key.
    unreadable_night = next(r for r in world.runs if r.unreadable).night
    html = get(client, f"/rejects?night={unreadable_night}")
    assert "obj-" in html and seed.PHI_KEY_MARKER not in html


def test_no_phi_on_any_page(client, dashboard_db: DashboardDB) -> None:
    world = dashboard_db.world
    raw_ids = {p.patient for p in world.studies()} | {p.accession for p in world.studies()}
    nights = [r.night for r in world.runs if r.unreadable][:2] + [world.spec.end]
    paths = [*(f"/{p}" for p in PAGES), "/audit?per_page=200",
             *(f"/rejects?night={n}" for n in nights)]
    for path in paths:
        html = get(client, path)
        assert seed.PHI_KEY_MARKER not in html, path
        assert "born 1950" not in html and "DOE" not in html, path
        leaked = [x for x in raw_ids if x in html]
        assert not leaked, (path, leaked[:3])


def _worklist_total(db, where: str = "", **params) -> int:
    return db.execute(text(
        "SELECT count(*) FROM (SELECT DISTINCT i.study_uid, i.kind, i.site FROM audit_items i) w"
        " LEFT JOIN adjudications a ON a.study_uid = w.study_uid AND a.kind = w.kind"
        f" WHERE true {where}"), params).scalar_one()


def test_audit_filters_sorting_and_paging(client, db) -> None:
    html = get(client, "/audit?per_page=10")
    everything = _worklist_total(db)
    assert everything > 20, "the seed should give a worklist of several pages"
    assert f'data-total="{everything}"' in html and len(table(html, "worklist")) == 10
    html = get(client, "/audit?site=site-b&kind=reread_sample")
    rows = table(html, "worklist")
    n = _worklist_total(db, "AND w.site = :s AND w.kind = :k", s="site-b", k="reread_sample")
    assert f'data-total="{n}"' in html and len(rows) == min(n, 25) and n > 0
    last = -(-everything // 10)
    html = get(client, f"/audit?per_page=10&page={last}")
    assert len(table(html, "worklist")) == everything - 10 * (last - 1)
    assert 'id="next-page"' not in html and 'id="prev-page"' in html
    assert {r["site"] for r in rows} == {"site-b"} and {r["kind"] for r in rows} == {
        "reread_sample"}
    html = get(client, "/audit?status=pending&per_page=200")
    pending = _worklist_total(db, "AND a.id IS NULL")
    assert f'data-total="{pending}"' in html and 0 < pending < _worklist_total(db)
    # Sorting by probability, ascending, across a page boundary.
    p1 = table(get(client, "/audit?sort=probability&direction=asc&per_page=10"), "worklist")
    p2 = table(get(client, "/audit?sort=probability&direction=asc&per_page=10&page=2"),
               "worklist")
    probs = [float(r["probability"]) for r in p1 + p2]
    assert probs == sorted(probs) and len(probs) == 20
    assert not {r["item"] for r in p1} & {r["item"] for r in p2}
    # Unknown sort keys and hostile filters are harmless: whitelisted and bound.
    html = get(client, "/audit?sort=probability;DROP TABLE audit_items&site=' OR 1=1 --")
    assert 'data-total="0"' in html
    assert db.execute(text("SELECT count(*) FROM audit_items")).scalar_one() > 0
    assert client.get("/audit?page=0", headers=AUTH).status_code == 422
    assert client.get("/quality?start=yesterday", headers=AUTH).status_code == 422
    # An untouched form field arrives as an empty string and means "no filter".
    html = get(client, "/audit?site=&kind=&status=&start=&end=&sort=exam_date&direction=desc")
    assert f'data-total="{everything}"' in html


def test_audit_metrics_equal_the_latest_run(client, db) -> None:
    html = get(client, "/audit")
    page = {(r["site"], r["metric"]): r["value"] for r in table(html, "audit-metrics")}
    expected = {(s, m): "–" if v is None else f"{v:.3f}" for s, m, v in db.execute(text(
        "SELECT site, metric, value FROM audit_metrics WHERE audit_run_id ="
        " (SELECT id FROM audit_runs ORDER BY started_at DESC LIMIT 1)"
        " AND metric IN ('sensitivity', 'specificity', 'auc')"))}
    assert page == expected and page


def test_drift_current_alerts_equal_the_newest_run(client, dashboard_db: DashboardDB) -> None:
    world = dashboard_db.world
    last = max(p.night for p in world.drift)
    expected = {(p.site, f"{p.family}/{p.feature}/{p.statistic}")
                for p in world.drift if p.night == last and p.status == "alert"}
    html = get(client, "/drift")
    rows = table(html, "current-alerts")
    shown = {(r["site"], r["metric"]) for r in rows if r["status"] == "alert"}
    assert shown == expected and expected
    counts = {r["site"]: int(r["alert"]) for r in table(html, "drift-status")}
    assert counts == {s: sum(1 for site, _ in expected if site == s) for s in world.spec.sites}


def test_models_page_shows_versions_usage_and_ablation(dashboard_db, db, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from bloodnet_ops.dashboard.app import create_app

    reports = tmp_path / "reports"
    (reports / "ablation").mkdir(parents=True)
    # The shape bloodnet_ops.model.ablation.run_ablation writes.
    (reports / "ablation" / "ablation.json").write_text(json.dumps({
        "claim": "classification that depends on segmentation (bloodnet) beats the alternatives",
        "data": {"train": {"studies": 40, "positive": 20}, "test": {"studies": 20, "positive": 10}},
        "train_config": {"epochs": 8, "batch_size": 16, "size": 128, "seed": 7},
        "bootstrap_replicates": 200,
        "results": [
            {"variant": "bloodnet", "auc": 0.951, "auc_ci": [0.93, 0.97],
             "sensitivity": 0.9, "specificity": 0.85, "delong_vs_bloodnet": None},
            {"variant": "cls-only", "auc": 0.902, "auc_ci": [0.88, 0.93],
             "sensitivity": 0.8, "specificity": 0.82,
             "delong_vs_bloodnet": {"z": 2.9, "p_value": 0.0037}},
        ],
        "test_study_uids": [f"2.25.{i}" for i in range(20)],
    }))
    with TestClient(create_app(dashboard_db.url, token=TOKEN, reports_dir=reports)) as c:
        html = get(c, "/models")
    assert "cls-only" in html and "0.9020" in html and "delong_vs_bloodnet.p_value" in html
    assert "[0.8800, 0.9300]" in html and "(20 items)" in html
    usage = {r["version"]: r for r in table(html, "model-usage")}
    expected = dict(db.execute(text(
        "SELECT f.model_version, count(DISTINCT (r.started_at AT TIME ZONE 'UTC')::date)"
        " FROM findings f JOIN inference_runs r ON r.run_id = f.run_id GROUP BY 1")).all())
    assert {v: int(r["nights"]) for v, r in usage.items()} == expected
    assert {r["version"] for r in table(html, "model-versions")} == {
        m.model_version for m in dashboard_db.world.models}


# ------------------------------------------------------------------ views and database access
#: Each aggregate view (read from the trigger-kept rollups) next to the same figures computed from
#: the per-row tables and views: the rollups must never drift from the rows they sum.
AGGREGATES_FROM_ROWS: dict[str, tuple[str, str]] = {
    "v_quality_by_site": (
        (
            "SELECT night, site, studies, accepted, warned, rejected, reject_rate"
            " FROM v_quality_by_site"
        ),
        (
            "SELECT night, site, count(*), count(*) FILTER (WHERE verdict = 'accept'),"
            " count(*) FILTER (WHERE verdict = 'accept_with_warning'),"
            " count(*) FILTER (WHERE verdict = 'reject'),"
            " (count(*) FILTER (WHERE verdict = 'reject'))::float8 / count(*)"
            " FROM v_validation_nights GROUP BY 1, 2"
        ),
    ),
    "v_findings_by_site": (
        (
            "SELECT night, site, scored, positives, median_seconds, total_seconds"
            " FROM v_findings_by_site"
        ),
        (
            "SELECT night, site, count(*), count(*) FILTER (WHERE positive),"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY load_seconds + infer_seconds),"
            " sum(load_seconds + infer_seconds) FROM v_finding_nights GROUP BY 1, 2"
        ),
    ),
    "v_findings_by_night": (
        ("SELECT night, scored, median_seconds FROM v_findings_by_night"),
        (
            "SELECT night, count(*),"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY load_seconds + infer_seconds)"
            " FROM v_finding_nights GROUP BY 1"
        ),
    ),
    "v_hu_trends": (
        (
            "SELECT night, site, n, air_peak, brain_median, p01, p99, mean, std FROM v_hu_trends"
        ),
        (
            "SELECT COALESCE((r.started_at AT TIME ZONE 'UTC')::date,"
            " (h.created_at AT TIME ZONE 'UTC')::date), h.site, count(*), avg(h.air_peak),"
            " avg(h.brain_median), avg(h.p01), avg(h.p99), avg(h.mean), avg(h.std)"
            " FROM hu_stats h LEFT JOIN inference_runs r ON r.run_id = h.run_id GROUP BY 1, 2"
        ),
    ),
    "v_rejects_by_reason": (
        (
            "SELECT night, site, reason, kind, n FROM v_rejects_by_reason"
        ),
        (
            "SELECT night, COALESCE(site, '(unknown)'), reason, kind, count(*) FROM v_quarantine"
            " GROUP BY 1, 2, 3, 4"
        ),
    ),
    "v_model_usage": (
        (
            "SELECT model_version, night, findings, positives, sites FROM v_model_usage"
        ),
        (
            "SELECT model_version, night, count(*), count(*) FILTER (WHERE positive),"
            " count(DISTINCT site) FROM v_finding_nights GROUP BY 1, 2"
        ),
    ),
}


@pytest.mark.parametrize("view", sorted(AGGREGATES_FROM_ROWS))
def test_aggregate_views_equal_the_rows_they_sum(dashboard_db: DashboardDB, view: str) -> None:
    from_view, from_rows = AGGREGATES_FROM_ROWS[view]
    # A connection of its own, closed at once: the module's shared one stays in a transaction,
    # and its locks on the views would block apply_views' DROP VIEW in a later test.
    engine = create_engine(dashboard_db.url)
    try:
        with engine.connect() as conn:
            got = sorted(tuple(r) for r in conn.execute(text(from_view)))
            expected = sorted(tuple(r) for r in conn.execute(text(from_rows)))
    finally:
        engine.dispose()
    assert len(got) == len(expected) > 0
    for g, e in zip(got, expected, strict=True):
        # Sums of floats in another order differ in the last bits; everything else is exact.
        assert g == tuple(pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for v in e)


def test_views_apply_idempotently_and_are_granted_to_the_reader(dashboard_db) -> None:
    from bloodnet_ops.db.views import apply_views, view_names

    assert apply_views(dashboard_db.url) == view_names()
    engine = create_engine(dashboard_db.url)
    try:
        with engine.connect() as conn:
            for name in view_names():
                assert conn.execute(text(
                    "SELECT has_table_privilege('bloodnet_reader', :v, 'SELECT')"),
                    {"v": name}).scalar_one(), name
    finally:
        engine.dispose()


def test_dashboard_connections_are_read_only(dashboard_db) -> None:
    from sqlalchemy.exc import DBAPIError

    from bloodnet_ops.dashboard.database import Database

    database = Database(dashboard_db.url)
    try:
        with database.connect() as conn, pytest.raises(DBAPIError, match="read-only"):
            conn.execute(text("DELETE FROM audit_items"))
    finally:
        database.dispose()
