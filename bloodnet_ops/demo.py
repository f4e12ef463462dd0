"""``bloodnet demo``: the whole platform end to end on one machine, in a few minutes.

1. PostgreSQL (``BLOODNET_DATABASE_URL``, a local server, or an embedded cluster under
   ``<out>/pg``) with a fresh ``bloodnet_demo`` database, migrated;
2. SeaweedFS under ``<out>/s3``;
3. a synthetic multi-site data set (a few faults, radiology reads) uploaded to
   ``s3://bloodnet-demo/incoming/``, the reads to ``s3://bloodnet-demo/reads/reads.csv``;
4. Airflow with ``AIRFLOW_HOME=./var/airflow``: ``airflow db migrate``, then
   ``airflow dags test bloodnet_nightly_screening``, then the audit and drift DAGs;
5. a report read back from the database.

Every run starts from a clean demo database and bucket, so a second ``bloodnet demo`` reports the
same kind of night. The services it started are stopped at the end unless ``keep_services``.

This module also builds the Airflow environment (``AIRFLOW_HOME``, DAG folder, the
``bloodnet_s3`` / ``bloodnet_db`` connections as ``AIRFLOW_CONN_*`` JSON) that the tests and the
DAG benchmark use; it never imports Airflow itself.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bloodnet_ops.settings import current

log = logging.getLogger(__name__)

SCREENING_DAG = "bloodnet_nightly_screening"
FOLLOW_UP_DAGS = ("bloodnet_retrospective_audit", "bloodnet_drift_monitor")
DEMO_DB = "bloodnet_demo"
DEMO_BUCKET = "bloodnet-demo"
INCOMING = "incoming"
DERIVED = "derived"
READS_KEY = "reads/reads.csv"
#: A demo waits seconds, not the production minutes, before retrying a failed task.
DEMO_RETRY_DELAY_S = 3.0
#: Share of studies the generator replaces with bad inputs, so the night has rejects to show.
FAULT_RATE = 0.04


# ---------------------------------------------------------------------------------------------
# Airflow environment (shared with tests/airflow_env.py and bench/bench_dag.py)


def repo_root() -> Path:
    """The checkout that holds ``dags/`` (the package is installed editable from it)."""
    here = Path(__file__).resolve().parents[1]
    for cand in (Path.cwd(), here):
        if (cand / "dags" / "nightly_screening.py").is_file():
            return cand.resolve()
    raise FileNotFoundError("no dags/nightly_screening.py: run from the bloodnet checkout")


def airflow_binary() -> str:
    """The ``airflow`` console script next to this interpreter (the project's venv)."""
    cand = Path(sys.executable).with_name("airflow")
    return str(cand) if cand.exists() else (shutil.which("airflow") or "airflow")


def db_connection_json(db_url: str) -> str:
    """``AIRFLOW_CONN_BLOODNET_DB``: a ``postgres`` connection from a SQLAlchemy URL."""
    from sqlalchemy import make_url

    u = make_url(db_url)
    doc: dict[str, Any] = {"conn_type": "postgres", "host": u.host or "127.0.0.1",
                           "port": u.port or 5432, "schema": u.database or ""}
    if u.username:
        doc["login"] = u.username
    if u.password:
        doc["password"] = u.password
    return json.dumps(doc)


def s3_connection_json(s3_env: dict[str, str], *, source_uri: str,
                       output_uri: str | None = None, reads_uri: str | None = None) -> str:
    """``AIRFLOW_CONN_BLOODNET_S3``: an ``aws`` connection; the endpoint and the locations
    (scanned source, SEG/SR outputs, radiology reads for the audit) in its extras."""
    extra: dict[str, str] = {"region_name": s3_env.get("AWS_DEFAULT_REGION", "us-east-1"),
                             "source_uri": source_uri}
    if s3_env.get("BLOODNET_S3_ENDPOINT"):
        extra["endpoint_url"] = s3_env["BLOODNET_S3_ENDPOINT"]
    if output_uri:
        extra["output_uri"] = output_uri
    if reads_uri:
        extra["reads_uri"] = reads_uri
    return json.dumps({"conn_type": "aws", "login": s3_env.get("AWS_ACCESS_KEY_ID", ""),
                       "password": s3_env.get("AWS_SECRET_ACCESS_KEY", ""), "extra": extra})


def airflow_environment(
    home: Path,
    *,
    db_url: str,
    s3_env: dict[str, str],
    source_uri: str,
    output_uri: str | None = None,
    reads_uri: str | None = None,
    dags_folder: Path | None = None,
    metadata_url: str | None = None,
    retry_delay_s: float | None = None,
) -> dict[str, str]:
    """Variables that point Airflow at ``home`` (SQLite metadata unless ``metadata_url``), this
    checkout's DAGs, and the BloodNet connections. Merge them into a copy of ``os.environ``."""
    home = Path(home).resolve()
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or repo_root() / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url or f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW_CONN_BLOODNET_DB": db_connection_json(db_url),
        "AIRFLOW_CONN_BLOODNET_S3": s3_connection_json(
            s3_env, source_uri=source_uri, output_uri=output_uri, reads_uri=reads_uri),
        # dags test runs every task in this process; torch must not grab every core per task
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1)),
    }
    if retry_delay_s is not None:
        env["BLOODNET_RETRY_DELAY_S"] = str(retry_delay_s)
        env["BLOODNET_MAX_RETRY_DELAY_S"] = str(max(retry_delay_s * 4, 1))
    return env


def run_airflow(args: list[str], env: dict[str, str], *, log_path: Path | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    """``airflow <args>`` with ``env`` merged into the environment; output to ``log_path``."""
    full = {**os.environ, **env}
    if log_path is None:
        return subprocess.run([airflow_binary(), *args], env=full, check=check, text=True,
                              capture_output=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as fh:
        fh.write(f"\n$ airflow {' '.join(args)}\n")
        fh.flush()
        res = subprocess.run([airflow_binary(), *args], env=full, text=True, stdout=fh,
                             stderr=subprocess.STDOUT, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args[:3])} failed ({res.returncode}); "
                           f"see {log_path}")
    return res


def migrate_airflow(env: dict[str, str], *, log_path: Path | None = None) -> None:
    """``airflow db migrate`` (idempotent)."""
    run_airflow(["db", "migrate"], env, log_path=log_path)


# ---------------------------------------------------------------------------------------------
# services


@dataclass
class DemoServices:
    """What the demo started (and must stop) or reused."""

    server_url: str
    db_url: str
    s3: Any  #: bloodnet_ops.services.S3Server
    pg: Any = None  #: EmbeddedPostgres when the demo started one
    started: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.s3 is not None:
            self.s3.stop()
        if self.pg is not None:
            self.pg.stop()

    def detach(self) -> None:
        """Keep the services running after this process exits (``--keep-services``)."""
        from bloodnet_ops import services

        # services stops everything it started at exit; a kept service leaves its list.
        for registry, obj in ((services._S3_RUNNING, self.s3), (services._EMBEDDED_RUNNING, self.pg)):
            if obj is not None and obj in registry:
                registry.remove(obj)


STATE_FILE = "services.json"


def _stop_kept(out: Path) -> None:
    """Stop the services an earlier ``--keep-services`` demo left running (their PIDs are in
    ``<out>/services.json``), so this run can own the data folders again."""
    import signal

    from bloodnet_ops import services

    state = out / STATE_FILE
    if not state.exists():
        return
    # PostgreSQL shuts down fast on SIGINT; SeaweedFS on SIGTERM
    signals = {"postgres": signal.SIGINT, "seaweedfs": signal.SIGTERM}
    for name, pid in json.loads(state.read_text()).items():
        if services._alive(pid):
            log.info("stopping %s (pid %d) kept by an earlier demo", name, pid)
            services._stop_process_group(pid, sig=signals.get(name, signal.SIGTERM), timeout=20)
    state.unlink()


def start_services(out: Path) -> DemoServices:
    """PostgreSQL (a clean ``bloodnet_demo`` database, migrated) and SeaweedFS (fresh data)."""
    from bloodnet_ops import services
    from bloodnet_ops.db.session import migrate

    _stop_kept(out)
    started: list[str] = []
    pg = None
    server_url = current().database_url or services.local_postgres_url()
    if server_url:
        from bloodnet_ops.db.session import normalise_url

        server_url = normalise_url(server_url)
    else:
        pg = services.start_embedded_postgres(out / "pg")
        server_url = pg.url
        started.append(f"embedded PostgreSQL (pid {pg.pid}, data {out / 'pg'})")
    services.drop_database(server_url, DEMO_DB)
    db_url = services.create_database(server_url, DEMO_DB)
    migrate(db_url)
    s3_dir = out / "s3"
    shutil.rmtree(s3_dir, ignore_errors=True)
    s3 = services.start_seaweedfs(s3_dir)
    started.append(f"SeaweedFS (pid {s3.pid}, {s3.endpoint})")
    return DemoServices(server_url=server_url, db_url=db_url, s3=s3, pg=pg, started=started)


# ---------------------------------------------------------------------------------------------
# data


def generate_and_upload(out: Path, *, studies: int, sites: int, seed: int, matrix: int,
                        s3_env: dict[str, str]) -> dict[str, Any]:
    """Synthetic studies (with faults) under ``<out>/data``, uploaded to the demo bucket and
    removed locally; the reads go to ``reads/`` (outside the scanned prefix); labels, masks and
    the fault list stay in ``<out>/data``."""
    from bloodnet_ops import synth
    from bloodnet_ops.storage import S3Config, s3_client, upload_folder

    data = out / "data"
    shutil.rmtree(data, ignore_errors=True)
    t0 = time.perf_counter()
    summary = synth.generate_dataset(data, studies=studies, sites=sites, seed=seed,
                                     matrix=matrix, fault_rate=FAULT_RATE)
    gen_s = time.perf_counter() - t0
    config = S3Config(endpoint=s3_env.get("BLOODNET_S3_ENDPOINT"),
                      access_key=s3_env.get("AWS_ACCESS_KEY_ID"),
                      secret_key=s3_env.get("AWS_SECRET_ACCESS_KEY"),
                      region=s3_env.get("AWS_DEFAULT_REGION"))
    t0 = time.perf_counter()
    n = 0
    for site_dir in sorted(p for p in data.iterdir() if p.is_dir() and p.name != "masks"):
        n += upload_folder(site_dir, DEMO_BUCKET, f"{INCOMING}/{site_dir.name}", config=config)
        shutil.rmtree(site_dir)  # the bucket holds them now; halves the demo's disk use
    client = s3_client(config=config)
    for p in sorted(p for p in data.iterdir() if p.is_file() and p.suffix == ".dcm"):
        client.upload_file(str(p), DEMO_BUCKET, f"{INCOMING}/{p.name}")  # top-level faults
        n += 1
    if (data / "reads.csv").exists():
        client.upload_file(str(data / "reads.csv"), DEMO_BUCKET, READS_KEY)
    up_s = time.perf_counter() - t0
    return {"summary": summary, "objects": n, "generate_s": gen_s, "upload_s": up_s,
            "data": data}


# ---------------------------------------------------------------------------------------------
# the report, read back from the database


def _analytics_and_dashboard(db_url: str) -> dict[str, Any]:
    """Audit/drift summary lines and the dashboard's views plus a fresh local token."""
    import secrets

    from bloodnet_ops.audit.summary import summary_lines
    from bloodnet_ops.db.views import apply_views

    apply_views(db_url)
    return {"analytics_lines": summary_lines(db_url),
            "dashboard_token": secrets.token_urlsafe(18)}


def format_report(rep: dict[str, Any], *, db_url: str, outputs_uri: str,
                  timings: dict[str, float]) -> str:
    """The human-readable report (plain text, no PHI)."""
    from sqlalchemy import make_url

    lines = ["", "BloodNet demo: one screening night, read back from the database", ""]
    lines.append(f"{'site':<14}{'studies':>8}{'rejected':>10}{'scored':>8}{'positive':>10}")
    for site, r in rep["per_site"].items():
        lines.append(f"{site:<14}{r.get('studies', 0):>8}{r.get('rejected', 0):>10}"
                     f"{r.get('scored', 0):>8}{r.get('positive', 0):>10}")
    lines.append(f"{'total':<14}{sum(r.get('studies', 0) for r in rep['per_site'].values()):>8}"
                 f"{sum(r.get('rejected', 0) for r in rep['per_site'].values()):>10}"
                 f"{rep['n_scored']:>8}{rep['n_positive']:>10}")
    lines.append("")
    lines.append("quarantine by reason: " + (", ".join(f"{k} {v}" for k, v in rep["rejects"].items())
                                             or "none"))
    if rep.get("seconds_per_study"):
        lines.append(f"screening run {rep['run_id']}: {rep['run_wall_s']:.1f} s wall, "
                     f"{rep['seconds_per_study']:.2f} s per scored study "
                     f"({60 / rep['seconds_per_study']:.0f} studies/min), model "
                     f"{rep['model_version']}")
    lines.extend(rep.get("analytics_lines", []))
    lines.append("")
    shown = make_url(db_url).render_as_string(hide_password=True)
    lines.append(f"results DB      {shown}")
    lines.append(f"DICOM SEG / SR  {outputs_uri}/<model_version>/<study_uid>/{{seg,sr}}.dcm "
                 f"({rep['n_seg']} SEG, {rep['n_sr']} SR)")
    token = rep.get("dashboard_token", "<choose a token>")
    lines.append(f"dashboard       BLOODNET_DASHBOARD_TOKEN={token} bloodnet dashboard --db '{shown}'")
    lines.append(f"                then open http://127.0.0.1:8050/overview?token={token}")
    lines.append("timings         " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the demo


def _default_model() -> Path:
    """The weights the DAG will load (``$BLOODNET_MODEL`` or ``models/bloodnet.pt``), found
    without importing torch."""
    from bloodnet_ops.resources import released_model

    env = current().model
    return Path(env) if env else released_model()


def run_demo(
    *,
    studies: int = 200,
    sites: int = 6,
    out: Path = Path("var/demo"),
    airflow_home: Path = Path("var/airflow"),
    matrix: int = 256,
    seed: int = 2019,
    batch_size: int = 25,
    keep_services: bool = False,
    echo=print,
) -> dict[str, Any]:
    """Run the demo; returns the report dict (also printed through ``echo``)."""
    t_start = time.perf_counter()
    for noisy in ("alembic", "botocore", "great_expectations"):  # the report is the output
        logging.getLogger(noisy).setLevel(logging.WARNING)
    model = _default_model()
    if not model.is_file():  # fail now, not after minutes of generating and uploading
        raise FileNotFoundError(
            f"no model weights at {model}: train them (`bloodnet train`) or point "
            "BLOODNET_MODEL at a checkpoint")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    airflow_log = out / "airflow.log"
    airflow_log.unlink(missing_ok=True)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    echo("starting PostgreSQL and SeaweedFS ...")
    svc = start_services(out)
    timings["services"] = time.perf_counter() - t0
    try:
        s3_env = svc.s3.env()
        echo(f"generating {studies} studies at {matrix}² from {sites} sites and uploading ...")
        data = generate_and_upload(out, studies=studies, sites=sites, seed=seed, matrix=matrix,
                                   s3_env=s3_env)
        timings["generate"], timings["upload"] = data["generate_s"], data["upload_s"]
        source_uri = f"s3://{DEMO_BUCKET}/{INCOMING}"
        output_uri = f"s3://{DEMO_BUCKET}/{DERIVED}"
        env = {**s3_env, **airflow_environment(
            Path(airflow_home), db_url=svc.db_url, s3_env=s3_env, source_uri=source_uri,
            output_uri=output_uri, reads_uri=f"s3://{DEMO_BUCKET}/{READS_KEY}",
            retry_delay_s=DEMO_RETRY_DELAY_S)}
        Path(airflow_home).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        migrate_airflow(env, log_path=airflow_log)
        timings["airflow_migrate"] = time.perf_counter() - t0
        echo(f"running {SCREENING_DAG} with `airflow dags test` (log: {airflow_log}) ...")
        t0 = time.perf_counter()
        run_airflow(["dags", "test", SCREENING_DAG, "-c", json.dumps({"batch_size": batch_size})],
                    env, log_path=airflow_log)
        timings["screening_dag"] = time.perf_counter() - t0
        for dag_id in FOLLOW_UP_DAGS:
            echo(f"running {dag_id} ...")
            t0 = time.perf_counter()
            res = run_airflow(["dags", "test", dag_id], env, log_path=airflow_log, check=False)
            timings[dag_id.removeprefix("bloodnet_")] = time.perf_counter() - t0
            if res.returncode != 0:
                echo(f"warning: {dag_id} failed (exit {res.returncode}); see {airflow_log}")
        from bloodnet_ops.db.reports import demo_report

        rep = demo_report(svc.db_url)
        rep.update(_analytics_and_dashboard(svc.db_url))
        timings["total"] = time.perf_counter() - t_start
        echo(format_report(rep, db_url=svc.db_url, outputs_uri=output_uri, timings=timings))
        if keep_services:
            svc.detach()
            echo("")
            echo("services kept running: " + "; ".join(svc.started))
            echo(f"S3 endpoint {svc.s3.endpoint} (keys: {out / 's3' / 's3.json'})")
            pids = {"seaweedfs": svc.s3.pid, "postgres": getattr(svc.pg, "pid", None)}
            pids = {k: v for k, v in pids.items() if v}
            (out / STATE_FILE).write_text(json.dumps(pids))
            echo(f"stop them with: kill {' '.join(map(str, pids.values()))}  "
                 "(or run the demo again)")
        rep["timings"] = timings
        rep["db_url"] = svc.db_url
        return rep
    finally:
        if not keep_services:
            svc.stop()
