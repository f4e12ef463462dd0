"""A small HTTP proxy on loopback that injects S3-style faults in front of a real S3 server.

Used by the fault-injection tests: boto3 talks to the proxy, the proxy forwards to SeaweedFS,
except for the requests a :class:`FaultPlan` picks, which get a throttling (``503 SlowDown``) or a
server error (``500 InternalError``) answer without reaching the server, optionally after a
delay. Every request is counted, so a test can show how many retries the client made.

SigV4 signatures survive the hop because the ``Host`` header is forwarded unchanged: the server
checks the signature against the host the client signed for.

Bounded by construction: faults stop after ``max_faults``, upstream calls time out, and
:meth:`FaultProxy.close` stops the server thread.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit

#: Headers that belong to one hop, never forwarded (RFC 9110 §7.6.1).
_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade"}

_ERRORS = {
    503: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    502: ("BadGateway", "Bad gateway."),
}


@dataclass
class FaultPlan:
    """Which requests fail, and how.

    Parameters
    ----------
    status
        HTTP status of an injected fault: 503 (S3 ``SlowDown``), 500 or 502.
    first
        The first ``first`` matching requests fail.
    fraction
        After those, each matching request fails with this probability (seeded).
    max_faults
        No more faults after this many (keeps a test bounded and under botocore's retry quota).
    delay_s
        Seconds to wait before answering every matching request (latency), faulted or not.
    link_bps
        Bytes per second of one link shared by all forwarded responses (0: unlimited): a
        response's body holds the link ``len / link_bps`` seconds, after the ones before it.
    match
        ``(method, path) -> bool``; default: every request.
    seed
        Seed of the ``fraction`` draws.
    """

    status: int = 503
    first: int = 0
    fraction: float = 0.0
    max_faults: int = 1000
    delay_s: float = 0.0
    link_bps: float = 0.0
    match: Callable[[str, str], bool] = field(default=lambda method, path: True)
    seed: int = 0


def reads_only(method: str, path: str) -> bool:
    """Object reads: GET of a key (not a bucket listing, whose path has no key)."""
    parts = urlsplit(path)
    return method == "GET" and parts.path.strip("/").count("/") >= 1


class FaultProxy:
    """Forward HTTP requests to ``upstream`` (``http://host:port``), injecting faults.

    Use as a context manager; :attr:`endpoint` is the URL to give the S3 client.
    """

    def __init__(self, upstream: str, plan: FaultPlan | None = None, *,
                 timeout: float = 30.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.plan = plan or FaultPlan()
        self.timeout = timeout
        self._lock = threading.Lock()
        self._rng = random.Random(self.plan.seed)
        self.requests: Counter[str] = Counter()  #: by method, every request received
        self.faults: Counter[int] = Counter()  #: by injected status
        self.forwarded = 0
        self.matched = 0
        self.bytes_out = 0  #: response body bytes forwarded to clients
        self._link_free = 0.0  # monotonic time at which the shaped link is idle again
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True,
                                        name="faultproxy")

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def n_faults(self) -> int:
        return sum(self.faults.values())

    def set_plan(self, plan: FaultPlan) -> None:
        """Replace the plan (counters of earlier faults are kept)."""
        with self._lock:
            self.plan = plan
            self.matched = 0
            self._rng = random.Random(plan.seed)

    # -- decisions ----------------------------------------------------------------------------
    def _decide(self, method: str, path: str) -> tuple[int | None, float]:
        """(status to inject or None, delay) for one request."""
        with self._lock:
            self.requests[method] += 1
            plan = self.plan
            if not plan.match(method, path):
                return None, 0.0
            self.matched += 1
            fail = self.n_faults < plan.max_faults and (
                self.matched <= plan.first
                or (plan.fraction > 0 and self._rng.random() < plan.fraction))
            if fail:
                self.faults[plan.status] += 1
                return plan.status, plan.delay_s
            self.forwarded += 1
            return None, plan.delay_s

    def _shape(self, n: int) -> None:
        """Hold the shared link for ``n`` bytes (when the plan limits bandwidth)."""
        with self._lock:
            self.bytes_out += n
            bps = self.plan.link_bps
            if bps <= 0:
                return
            start = max(time.monotonic(), self._link_free)
            self._link_free = start + n / bps
            done = self._link_free
        time.sleep(max(0.0, done - time.monotonic()))

    # -- the handler --------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and
            # the client's delayed ACK add ~40 ms to every small response
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                pass  # keys may be logged by a real proxy; the tests want quiet

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _fault(self, status: int) -> None:
                code, message = _ERRORS.get(status, ("InternalError", "injected fault"))
                body = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{code}</Code><Message>{message}</Message>"
                    f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("x-amz-request-id", uuid.uuid4().hex)
                if status == 503:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", str(0 if self.command == "HEAD" else
                                                       len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self, body: bytes) -> None:
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                                  timeout=proxy.timeout)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True,
                                    skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        if name.lower() not in _HOP and name.lower() != "content-length":
                            conn.putheader(name, value)
                    if body or self.command in ("PUT", "POST"):
                        conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body or None)
                    resp = conn.getresponse()
                    data = resp.read()
                    proxy._shape(len(data))
                    self.send_response(resp.status, resp.reason)
                    for name, value in resp.getheaders():
                        if name.lower() not in _HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    declared = resp.getheader("Content-Length")
                    length = declared if self.command == "HEAD" and declared else len(data)
                    self.send_header("Content-Length", str(length))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            def _handle(self) -> None:
                body = self._body()
                status, delay = proxy._decide(self.command, self.path)
                if delay:
                    time.sleep(delay)
                if status is not None:
                    self._fault(status)
                    return
                try:
                    self._forward(body)
                except OSError:
                    self.close_connection = True  # upstream gone: the client sees a reset

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
