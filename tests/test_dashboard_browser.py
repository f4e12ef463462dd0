
"""The dashboards in a real headless Chromium (Debian's ``chromium`` + ``chromedriver``, Selenium).

Each page loads with a clean console, every Plotly chart is drawn with data points, the chart data
equal the database, filters/sorting/paging work by clicking, hostile values stay text, and a
full-page PNG of each page is written to ``reports/screenshots/``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dashboard_fixtures import (
    REPO,
    SCREENSHOTS,
    TOKEN,
    DashboardDB,
    LiveServer,
    free_port,
)
from sqlalchemy import create_engine, text

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--window-size=1400,1000", "--force-device-scale-factor=1",
)
WAIT_S = 30


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            pytest.fail(f"{path} is missing: apt-get install chromium chromium-driver",
                        pytrace=False)
    profile = tempfile.mkdtemp(prefix="bloodnet-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def signed_in(browser, live_dashboard: LiveServer):
    """The browser after opening the dashboard once with ``?token=`` (now an HttpOnly cookie)."""
    browser.get(f"{live_dashboard.base}overview?token={TOKEN}")
    assert "token=" not in browser.current_url
    browser.get_log("browser")  # start each test with an empty console
    return browser


def console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def wait_for_charts(driver) -> int:
    """Wait until every chart holder on the page has been drawn; returns how many there are."""
    from selenium.webdriver.support.ui import WebDriverWait

    expected = driver.execute_script("return document.querySelectorAll('[data-figure]').length")
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(
        "return document.querySelectorAll('[data-figure][data-rendered=true]').length") == expected)
    return int(expected)


def navigates(driver, action) -> None:
    """Run ``action`` (a click or a select) and wait until the next page has fully loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    action()
    WebDriverWait(driver, WAIT_S).until(ec.staleness_of(old))
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def screenshot(driver, name: str) -> None:
    """A full-page PNG: the window is grown to the document's height first."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(int(height) + 40, 800), 6000))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    driver.set_window_size(1400, 1000)


PAGES = {
    "overview": ("overview", 4),
    "quality": ("quality", 6),
    "audit": ("audit", 4),
    "drift": ("drift", 1),
    "models": ("models", 1),
}


@pytest.mark.parametrize("name", list(PAGES))
def test_page_loads_clean_with_charts_drawn(signed_in, live_dashboard: LiveServer, name) -> None:
    path, n_charts = PAGES[name]
    driver = signed_in
    driver.get(live_dashboard.base + path)
    assert wait_for_charts(driver) == n_charts
    per_chart = driver.execute_script("""
        return Array.from(document.querySelectorAll('[data-figure]')).map(el => ({
            id: el.id,
            svg: el.querySelectorAll('svg.main-svg').length,
            points: el.querySelectorAll('.point, .scatterlayer path.js-line').length,
            traces: (el.data || []).length,
            values: (el.data || []).reduce((n, t) => n + ((t.y || t.x || []).length), 0)
        }));""")
    for chart in per_chart:
        assert chart["svg"] > 0 and chart["traces"] > 0, chart
        assert chart["points"] > 0 and chart["values"] > 0, chart
    assert driver.find_element("css selector", "h1").text
    assert console_errors(driver) == []
    screenshot(driver, name)


def test_reject_drilldown_by_click_keeps_hostile_values_as_text(
    signed_in, live_dashboard: LiveServer
) -> None:
    import datetime as dt

    from selenium.webdriver.common.by import By

    driver = signed_in
    spec = live_dashboard.db.world.spec
    night = spec.end - dt.timedelta(days=1)
    driver.get(f"{live_dashboard.base}quality?site=site-a&start={night}&end={night}")
    wait_for_charts(driver)
    navigates(driver, driver.find_element(By.CSS_SELECTOR, "#reject-nights a.drill").click)
    assert "rejects?" in driver.current_url and f"night={night}" in driver.current_url
    rows = driver.find_elements(By.CSS_SELECTOR, "#quarantine tbody tr[data-kind]")
    assert rows and all("site-a" in r.text for r in rows)
    cells = driver.find_element(By.ID, "night-expectations").text
    assert "<script>window.__pwned = 1</script>" in cells  # shown as text...
    assert driver.execute_script("return window.__pwned === undefined")  # ...never run
    assert console_errors(driver) == []
    screenshot(driver, "quality-drilldown")


def test_worklist_filters_sorting_and_paging_by_click(
    signed_in, live_dashboard: LiveServer
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = signed_in
    driver.get(live_dashboard.base + "audit?per_page=10")
    wait_for_charts(driver)
    total_all = int(driver.find_element(By.ID, "worklist-total").get_attribute("data-total"))
    # Choosing a site submits the filter form.
    select = Select(driver.find_element(By.CSS_SELECTOR, "#worklist-filters select[name=site]"))
    navigates(driver, lambda: select.select_by_value("site-a"))
    assert "site=site-a" in driver.current_url
    sites = {e.text for e in driver.find_elements(By.CSS_SELECTOR, "#worklist td[data-col=site]")}
    assert sites == {"site-a"}
    engine = create_engine(live_dashboard.db.url)
    with engine.connect() as conn:
        expected = conn.execute(text(
            "SELECT count(DISTINCT (study_uid, kind)) FROM audit_items WHERE site = 'site-a'"
        )).scalar_one()
    engine.dispose()
    total = int(driver.find_element(By.ID, "worklist-total").get_attribute("data-total"))
    assert total == expected and 0 < total < total_all
    # Clear the filter, sort by P(ICH) (descending first, then ascending), page forward.
    driver.get(live_dashboard.base + "audit?per_page=10")
    sort_link = "#worklist th a[data-sort=probability]"
    navigates(driver, driver.find_element(By.CSS_SELECTOR, sort_link).click)
    assert "sort=probability" in driver.current_url and "direction=desc" in driver.current_url
    navigates(driver, driver.find_element(By.CSS_SELECTOR, sort_link).click)
    assert "direction=asc" in driver.current_url

    def probs() -> list[float]:
        return [float(e.text) for e in
                driver.find_elements(By.CSS_SELECTOR, "#worklist td[data-col=probability]")]

    first = probs()
    assert first == sorted(first) and len(first) == 10
    navigates(driver, driver.find_element(By.ID, "next-page").click)
    assert "page=2" in driver.current_url
    assert driver.find_element(By.ID, "page-number").text == "2"
    second = probs()
    assert second == sorted(second) and min(second) >= max(first)
    assert console_errors(driver) == []


def test_overview_chart_data_equal_the_database(signed_in, live_dashboard: LiveServer) -> None:
    driver = signed_in
    driver.get(live_dashboard.base + "overview?days=7")
    wait_for_charts(driver)
    drawn = driver.execute_script("""
        const el = document.getElementById('chart-studies');
        return el.data.map(t => ({site: t.name, total: t.y.reduce((a, b) => a + b, 0)}));""")
    end = live_dashboard.db.world.spec.end
    engine = create_engine(live_dashboard.db.url)
    with engine.connect() as conn:
        expected = dict(conn.execute(text(
            "SELECT s.site, count(*) FROM validation_results v"
            " JOIN studies s ON s.study_uid = v.study_uid"
            " JOIN inference_runs r ON r.run_id = v.run_id"
            " WHERE (r.started_at AT TIME ZONE 'UTC')::date BETWEEN :a AND :b GROUP BY 1"),
            {"a": end.fromordinal(end.toordinal() - 6), "b": end}).all())
    engine.dispose()
    assert {d["site"]: d["total"] for d in drawn} == expected


def test_a_browser_without_the_token_is_refused(browser, live_dashboard: LiveServer) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    try:
        browser.get(live_dashboard.base + "quality")
        assert "Not authenticated" in browser.find_element(By.TAG_NAME, "body").text
        assert browser.execute_script("return document.querySelectorAll('.chart').length") == 0
    finally:
        browser.get_log("browser")  # the 401 is logged as a console error on purpose
        browser.get(f"{live_dashboard.base}overview?token={TOKEN}")  # signed in again


@pytest.fixture(scope="module")
def airflow_api_server(
    airflow_home: Path, dashboard_db: DashboardDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real ``airflow api-server`` with this checkout's plugins folder and one viewer user."""
    work = tmp_path_factory.mktemp("airflow_api")
    passwords = work / "passwords.json"
    passwords.write_text(json.dumps({"reviewer": "reviewer-password-0123"}))
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(48),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "reviewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "BLOODNET_DASHBOARD_DB_URL": dashboard_db.url,
    }
    env.pop("BLOODNET_DASHBOARD_TOKEN", None)
    env.pop("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", None)
    log = (work / "api-server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("airflow")), "api-server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=3).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("airflow api-server did not start:\n"
                            + (work / "api-server.log").read_text()[-3000:], pytrace=False)
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def test_pages_embedded_in_the_airflow_ui(browser, airflow_api_server: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base = airflow_api_server
    anonymous = httpx.get(f"{base}/bloodnet/overview", timeout=60)
    assert anonymous.status_code == 401  # the plugin's routes enforce Airflow's auth themselves
    jwt = httpx.post(f"{base}/auth/token", timeout=60, json={
        "username": "reviewer", "password": "reviewer-password-0123"}).json()["access_token"]
    browser.delete_all_cookies()
    browser.get(f"{base}/bloodnet/healthz")  # on the origin, so the cookie can be set
    browser.add_cookie({"name": "_token", "value": jwt, "path": "/"})  # what Airflow's login sets
    browser.get(f"{base}/plugin/bloodnet-quality")  # the external view's url_route in the nav
    frame = WebDriverWait(browser, 90).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "iframe[src*='bloodnet/quality']"))[0]
    browser.switch_to.frame(frame)
    try:
        assert wait_for_charts(browser) == 6
        assert browser.find_element(By.TAG_NAME, "h1").text == "Data quality"
    finally:
        browser.switch_to.default_content()
    ours = [e for e in console_errors(browser) if "/bloodnet/" in e.get("message", "")]
    assert ours == []
    screenshot(browser, "airflow-embedded")
    browser.delete_all_cookies()
