"""Build Airflow's own FastAPI app with the BloodNet plugin loaded and probe its auth, in-process.

Run by ``tests/test_dashboard.py`` as ``python tests/dashboard_airflow_probe.py`` in a child
process with its own Airflow environment (``AIRFLOW_HOME`` with a migrated metadata DB,
``AIRFLOW__CORE__PLUGINS_FOLDER`` = this checkout's ``plugins/``, a JWT secret, and
``BLOODNET_DASHBOARD_DB_URL``): Airflow reads its configuration once per process, so a child is the
only way to load *this* plugins folder whatever other tests configured. Inside the child the
requests go through starlette's TestClient against the real app. Writes one JSON object to the
path given as the first argument (Airflow logs to stdout).
"""

from __future__ import annotations

import json
import os
import sys


def main(out_path: str) -> None:
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    app = create_app()
    out: dict[str, object] = {}
    with TestClient(app) as client:
        page = "/bloodnet/overview"
        manager = get_auth_manager()
        jwt = manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
        expired = manager.generate_jwt(
            SimpleAuthManagerUser(username="admin", role="admin"), expiration_time_in_seconds=-60
        )
        cases = {
            "anonymous": {},
            "anonymous_static": {"path": "/bloodnet/static/plotly.min.js"},
            "garbage_bearer": {"headers": {"Authorization": "Bearer not-a-jwt"}},
            "expired_jwt": {"headers": {"Authorization": f"Bearer {expired}"}},
            "jwt_bearer": {"headers": {"Authorization": f"Bearer {jwt}"}},
            "jwt_cookie": {"cookies": {"_token": jwt}},
        }
        token = os.environ.get("BLOODNET_DASHBOARD_TOKEN")
        if token:
            cases["dashboard_token"] = {"headers": {"Authorization": f"Bearer {token}"}}
        for name, spec in cases.items():
            client.cookies.clear()
            for k, v in spec.get("cookies", {}).items():
                client.cookies.set(k, v)
            r = client.get(spec.get("path", page), headers=spec.get("headers", {}),
                           follow_redirects=False)
            out[name] = {"status": r.status_code, "has_title": "<h1>Overview</h1>" in r.text}
        client.cookies.clear()
        r = client.get("/api/v2/plugins", headers={"Authorization": f"Bearer {jwt}"})
        plugins = r.json().get("plugins", []) if r.status_code == 200 else []
        ours = [p for p in plugins if p["name"] == "bloodnet_dashboard"]
        out["plugins_status"] = r.status_code
        out["plugin"] = ours[0] if ours else None
        r = client.get("/api/v2/plugins/importErrors", headers={"Authorization": f"Bearer {jwt}"})
        out["plugin_import_errors"] = r.json().get("import_errors", []) if r.is_success else None
    with open(out_path, "w") as fh:
        json.dump(out, fh, default=str)


if __name__ == "__main__":
    main(sys.argv[1])
