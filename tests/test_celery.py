"""Scale-out for real: CeleryExecutor on loopback routes ``queue="gpu"`` tasks to the GPU worker.

Real processes, no mocks: Redis (broker), PostgreSQL (Airflow metadata DB + Celery result
backend, on the session's server), SeaweedFS, and Airflow 3's api-server, scheduler,
dag-processor and two Celery workers: a "cpu" worker on the default queue and a "gpu" worker
consuming only ``gpu``. ``TI.hostname`` is the same for both workers on one host, so where a task
ran is proven twice: each worker has its own ``BLOODNET_WORKER_NAME`` (the probe DAG records it),
and each worker's log names the Celery task ids it executed (matched to
``task_instance.external_executor_id``).

1. a tiny probe DAG: one default-queue task, one ``queue="gpu", pool="gpu"`` task;
2. the real ``bloodnet_nightly_screening`` DAG over the small synthetic set: every mapped
   ``infer`` runs on the gpu worker, and the findings equal those of ``airflow dags test``.

Everything the test starts runs in its own process group and is stopped by PID, also on failure.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from screening_fixtures import labels, upload_studies

from bloodnet_ops.services import create_database, drop_database, free_port

DAG_ID = "bloodnet_celery_routing_probe"
RUN_ID = "celery_routing_probe_1"
SCREENING_DAG_ID = "bloodnet_nightly_screening"
#: Bound on one DAG run once services are up; the probe's cold start needs ~30 s when idle.
RUN_TIMEOUT_S = 240
REPO = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))

DAG_SOURCE = '''
"""Routing probe for tests/test_celery.py: one task per queue, each records its worker."""
import json
import os
from pathlib import Path

import pendulum
from airflow.sdk import dag, task


def _record(name: str) -> dict:
    seen = {"task": name, "worker": os.environ.get("BLOODNET_WORKER_NAME", "?")}
    out = Path(os.environ["BLOODNET_PROBE_OUT"]) / f"{name}.json"
    out.write_text(json.dumps(seen))
    return seen


@dag(dag_id="__DAG_ID__", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
     catchup=False, default_args={"retries": 0})
def routing_probe():
    @task
    def prepare() -> dict:
        return _record("prepare")

    @task(queue="gpu", pool="gpu")
    def infer(upstream: dict) -> dict:
        return {**_record("infer"), "upstream": upstream["worker"]}

    infer(prepare())


routing_probe()
'''.replace("__DAG_ID__", DAG_ID)


@dataclass
class Cluster:
    """The processes of one loopback deployment; ``stop`` ends each process group by PID."""

    root: Path
    env: dict[str, str]
    api_port: int
    db_url: str  #: Airflow metadata DB
    results_url: str = ""  #: BloodNet results DB of the screening run
    bucket: str = ""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    redis_pidfile: Path | None = None

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def start(self, name: str, args: list[str], **extra_env: str) -> None:
        self.log(name).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log(name), "wb") as fh:
            self.procs[name] = subprocess.Popen(
                args, env={**self.env, **extra_env}, stdout=fh, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.root, start_new_session=True,
            )

    def airflow(self, *args: str, timeout: float = 180, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            [AIRFLOW, *args], env=env or self.env, cwd=self.root, capture_output=True, text=True,
            timeout=timeout, check=False,
        )
        assert proc.returncode == 0, (
            f"airflow {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def assert_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        try:
            return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group may hold task or pool children that outlive the leader
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        if self.redis_pidfile and self.redis_pidfile.exists():
            pid = int(self.redis_pidfile.read_text().strip())
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _airflow_db(server_url: str) -> tuple[str, str]:
    """(name, psycopg2 URL) of a fresh Airflow metadata database on the session's server."""
    name = f"bloodnet_airflow_celery_{secrets.token_hex(4)}"
    url = sa.engine.make_url(create_database(server_url, name))
    return name, url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def _wait(what: str, check, cluster: Cluster, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.assert_alive()
        value = check()
        if value:
            return value
        time.sleep(every)
    logs = "\n".join(f"--- {n}\n{cluster.tail(n)}" for n in cluster.procs)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")


def _api_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2):
            return True
    except OSError:
        return False


def _scalar(url: str, sql: str, **params):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def _rows(url: str, sql: str, **params) -> list:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params).all())
    finally:
        engine.dispose()


def _run_dag(cluster: Cluster, dag_id: str, run_id: str, conf: dict | None = None) -> str:
    """Unpause and trigger ``dag_id`` through the CLI; wait (bounded) for the run to end."""
    _wait(f"{dag_id} to be parsed and serialized", lambda: _scalar(
        cluster.db_url, "SELECT count(*) FROM serialized_dag WHERE dag_id = :d", d=dag_id),
        cluster, 120)
    _wait("the api-server", lambda: _api_healthy(cluster.api_port), cluster, 120)
    cluster.airflow("dags", "unpause", dag_id)
    cluster.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf or {}))

    def ended():
        state = _scalar(cluster.db_url, "SELECT state FROM dag_run WHERE dag_id = :d AND "
                        "run_id = :r", d=dag_id, r=run_id)
        return state if state in ("success", "failed") else None

    return _wait(f"{dag_id} run {run_id} to finish", ended, cluster, RUN_TIMEOUT_S, every=2)


def _task_instances(cluster: Cluster, dag_id: str, run_id: str) -> list:
    return _rows(cluster.db_url, "SELECT task_id, map_index, state, queue, pool, "
                 "external_executor_id FROM task_instance WHERE dag_id = :d AND run_id = :r "
                 "ORDER BY task_id, map_index", d=dag_id, r=run_id)


def _executed_by(cluster: Cluster, celery_task_id: str) -> list[str]:
    """Which workers' logs say they executed the Celery task ``celery_task_id``."""
    return [name for name in ("cpu", "gpu")
            if f"[{celery_task_id}] Executing workload" in
            cluster.log(f"worker-{name}").read_text(errors="replace")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_server_url, s3_server) -> Iterator[Cluster]:
    from cryptography.fernet import Fernet

    from bloodnet_ops.db.session import migrate
    from bloodnet_ops.demo import db_connection_json, s3_connection_json

    redis = shutil.which("redis-server")
    assert redis, "redis-server is missing: run scripts/test-prereqs.sh (Debian: redis-server)"
    root = tmp_path_factory.mktemp("celery")
    dags = root / "dags"
    dags.mkdir()
    (root / "probe").mkdir()
    (dags / "routing_probe.py").write_text(DAG_SOURCE)
    # Only the screening DAG (and its helper): the audit and drift DAGs it feeds are not needed.
    for name in ("nightly_screening.py", "_common.py"):
        shutil.copy(REPO / "dags" / name, dags / name)

    db_name, db_url = _airflow_db(pg_server_url)
    results_name = f"bloodnet_celery_results_{secrets.token_hex(4)}"
    results_url = create_database(pg_server_url, results_name)
    migrate(results_url)
    # Filled by the screening test; the connections must be known before the workers start.
    bucket = f"celery-{secrets.token_hex(4)}"
    redis_port, api_port = free_port(), free_port()

    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("AIRFLOW") and k != "BLOODNET_WORKER_NAME"
    }
    env.update({
        "AIRFLOW_HOME": str(root / "airflow-home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        # One secret and one Fernet key for every process, generated once (DESIGN §7).
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": base64.urlsafe_b64encode(secrets.token_bytes(64)).decode(),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db_url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        # Only the runs the test triggers: unpausing the nightly DAG must not add a cron run.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(root / "task-logs"),
        "AIRFLOW_CONN_BLOODNET_DB": db_connection_json(results_url),
        "AIRFLOW_CONN_BLOODNET_S3": s3_connection_json(
            s3_server.env(), source_uri=f"s3://{bucket}/incoming",
            output_uri=f"s3://{bucket}/derived"),
        "BLOODNET_PROBE_OUT": str(root / "probe"),
        "BLOODNET_RETRY_DELAY_S": "1",
        "BLOODNET_MAX_RETRY_DELAY_S": "2",
        "OMP_NUM_THREADS": "1",  # two workers and the control plane share two cores
    })
    c = Cluster(root, env, api_port, db_url, results_url=results_url, bucket=bucket,
                redis_pidfile=root / "redis.pid")
    try:
        subprocess.run(
            [redis, "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
             "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(c.redis_pidfile),
             "--dir", str(root), "--logfile", str(root / "redis.log")],
            check=True, timeout=30,
        )
        c.airflow("db", "migrate", timeout=300)
        c.start("api-server", [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port",
                               str(api_port), "--workers", "1"])
        c.start("scheduler", [AIRFLOW, "scheduler"])
        c.start("dag-processor", [AIRFLOW, "dag-processor"])
        for name, queue in (("cpu", "default"), ("gpu", "gpu")):
            c.start(f"worker-{name}", [
                AIRFLOW, "celery", "worker", "-q", queue, "-H", f"{name}@%h", "-c", "1",
                "--pid", str(root / f"worker-{name}.pid"), "--skip-serve-logs",
                "--without-gossip", "--without-mingle",
            ], BLOODNET_WORKER_NAME=name)
        c.airflow("pools", "set", "gpu", "1", "GPU slots: one per GPU on the gpu workers")
        yield c
    finally:
        c.stop()
        from bloodnet_ops import nightly

        nightly.dispose_engines()
        drop_database(pg_server_url, db_name)
        drop_database(pg_server_url, results_name)


def test_gpu_queue_tasks_run_on_the_gpu_worker(cluster):
    state = _run_dag(cluster, DAG_ID, RUN_ID)
    tis = {ti.task_id: ti for ti in _task_instances(cluster, DAG_ID, RUN_ID)}
    assert state == "success", f"probe run ended {state}: {tis}"
    assert (tis["infer"].queue, tis["infer"].pool) == ("gpu", "gpu")
    assert (tis["prepare"].queue, tis["prepare"].pool) == ("default", "default_pool")
    seen = {p.stem: json.loads(p.read_text()) for p in (cluster.root / "probe").glob("*.json")}
    assert seen["prepare"]["worker"] == "cpu"
    assert seen["infer"]["worker"] == "gpu"
    assert _executed_by(cluster, tis["infer"].external_executor_id) == ["gpu"]
    assert _executed_by(cluster, tis["prepare"].external_executor_id) == ["cpu"]


def test_screening_dag_infers_on_the_gpu_worker_like_dags_test(
    cluster, synth_small, tiny_model, tmp_path,
):
    from bloodnet_ops.db.session import migrate
    from bloodnet_ops.demo import db_connection_json, s3_connection_json

    upload_studies(synth_small, cluster.bucket, "incoming")
    # One site's studies (a backfill prefix) keep the run short: 3 studies, 2 mapped infers.
    site = "site-a"
    expected = {uid for uid, row in labels(synth_small).items() if row["site"] == site}
    conf = {"batch_size": 2, "model_path": str(tiny_model), "prefix": f"{site}/"}

    # The reference: the same night with `airflow dags test` (in-process; its own SQLite
    # metadata, results DB and output prefix), run alongside the Celery run to save wall time.
    server = sa.engine.make_url(cluster.results_url).set(database="postgres")
    server_url = server.render_as_string(hide_password=False)
    name = f"bloodnet_dags_test_{secrets.token_hex(4)}"
    reference_url = create_database(server_url, name)
    reference = None
    try:
        migrate(reference_url)
        s3 = json.loads(cluster.env["AIRFLOW_CONN_BLOODNET_S3"])
        env = {**cluster.env,
               "AIRFLOW_HOME": str(tmp_path / "home"),
               "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
               "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
               "AIRFLOW_CONN_BLOODNET_DB": db_connection_json(reference_url),
               "AIRFLOW_CONN_BLOODNET_S3": s3_connection_json(
                   {"AWS_ACCESS_KEY_ID": s3["login"], "AWS_SECRET_ACCESS_KEY": s3["password"],
                    "BLOODNET_S3_ENDPOINT": s3["extra"]["endpoint_url"]},
                   source_uri=s3["extra"]["source_uri"],
                   output_uri=f"s3://{cluster.bucket}/derived-reference")}
        script = (f"{AIRFLOW} db migrate && {AIRFLOW} dags test {SCREENING_DAG_ID} "
                  f"2026-03-01T01:00:00+00:00 --conf '{json.dumps(conf)}'")
        with open(tmp_path / "dags-test.log", "wb") as log:
            reference = subprocess.Popen(["bash", "-c", script], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

        run_id = "celery_screening_1"
        state = _run_dag(cluster, SCREENING_DAG_ID, run_id, conf)
        tis = _task_instances(cluster, SCREENING_DAG_ID, run_id)
        assert state == "success", f"screening run ended {state}: {tis}"
        assert sum(ti.task_id == "infer" for ti in tis) == 2  # 3 studies in batches of 2
        for ti in tis:
            assert ti.state == "success", ti
            on_gpu = ti.task_id == "infer"
            assert (ti.queue == "gpu") is on_gpu and (ti.pool == "gpu") is on_gpu, ti
            assert _executed_by(cluster, ti.external_executor_id) == (
                ["gpu"] if on_gpu else ["cpu"]), ti

        rc = reference.wait(timeout=RUN_TIMEOUT_S)
        output = (tmp_path / "dags-test.log").read_text(errors="replace")
        assert rc == 0, f"airflow dags test failed:\n{output[-4000:]}"
        sql = ("SELECT study_uid, series_uid, site, patient_key, probability, positive, "
               "volume_ml, subtypes, model_version, weights_sha256, preprocessing_version "
               "FROM findings ORDER BY study_uid")
        celery_rows, reference_rows = _rows(cluster.results_url, sql), _rows(reference_url, sql)
        assert {row.study_uid for row in celery_rows} == expected
        assert celery_rows == reference_rows
    finally:
        if reference is not None and reference.poll() is None:
            os.killpg(reference.pid, signal.SIGKILL)
            reference.wait(timeout=10)
        drop_database(server_url, name)
