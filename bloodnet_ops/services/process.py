"""Processes the services run as: free ports, log tails, stopping a process group."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

LOCAL_HOST = "127.0.0.1"



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


