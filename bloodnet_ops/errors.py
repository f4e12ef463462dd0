"""Expected failures, told to a person: what failed, the value received, what to do.

A command line run fails in a handful of ways that are not bugs: no or wrong S3 credentials, a
missing bucket, an endpoint or a database that is down or refuses the login, a missing or
corrupt model file, a bad argument. :func:`explain` turns the exception of such a failure (or
one it was raised from) into a :class:`UserError`; the CLI prints its two lines instead of a
traceback and exits non-zero. Anything else is a bug and keeps its traceback.

Secrets never appear: a database is named by host and port only, and an S3 access key by its
first four characters.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator


class UserError(Exception):
    """A failure the user can fix: ``what`` failed (with the value received) and ``todo``."""

    def __init__(self, what: str, todo: str, *, code: int = 1) -> None:
        super().__init__(what)
        self.what = what
        self.todo = todo
        self.code = code  #: the exit status: 2 for a bad argument, as click uses

    def lines(self) -> list[str]:
        return [f"error: {self.what}", f"  {self.todo}"]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def _endpoint() -> str:
    from bloodnet_ops.settings import current

    return current().s3_endpoint or "AWS S3 (BLOODNET_S3_ENDPOINT not set)"


def _s3(exc: BaseException) -> UserError | None:
    try:
        from botocore import exceptions as bce
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return None
    endpoint = _endpoint()
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return UserError(f"no S3 credentials found for {endpoint}",
                         "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
    if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError):
        return UserError(f"cannot reach the S3 endpoint {endpoint}",
                         "start the object store or fix BLOODNET_S3_ENDPOINT")
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code") or "")
        bucket = str(err.get("BucketName") or "")
        if code == "NoSuchBucket":
            return UserError(f"S3 bucket {bucket or '?'!r} does not exist at {endpoint}",
                             "create the bucket or check the s3:// URI")
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
                    "InvalidToken", "ExpiredToken"}:
            key = os.environ.get("AWS_ACCESS_KEY_ID", "")
            shown = f" (access key {key[:4]}…)" if key else ""
            return UserError(f"S3 at {endpoint} refused the credentials{shown}: {code}",
                             "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy")
    return None


def _database(exc: BaseException) -> UserError | None:
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return None
    message = str(getattr(exc, "orig", exc))
    where = re.search(r'server at "([^"]+)"(?: \([^)]*\))?, port (\d+)', message)
    target = f"{where.group(1)}:{where.group(2)}" if where else "the database"
    if "password authentication failed" in message or "no pg_hba.conf entry" in message:
        user = re.search(r'for user "([^"]+)"', message)
        return UserError(f"the database at {target} refused the login"
                         f"{' of user ' + repr(user.group(1)) if user else ''}",
                         "check the user and password in --db / BLOODNET_DATABASE_URL")
    if re.search(r'database "[^"]+" does not exist', message):
        name = re.search(r'database "([^"]+)"', message)
        return UserError(f"database {name.group(1)!r} does not exist at {target}",  # type: ignore[union-attr]
                         "create it (createdb) or fix the name in --db")
    if re.search(r'role "[^"]+" does not exist', message):
        return UserError(f"the database at {target} has no such user: {message.splitlines()[0]}",
                         "check the user in --db / BLOODNET_DATABASE_URL")
    if "Connection refused" in message or "could not connect" in message \
            or "timeout expired" in message or "could not translate host name" in message:
        return UserError(f"cannot reach the database at {target}",
                         "start PostgreSQL or fix --db / BLOODNET_DATABASE_URL")
    return None


def explain(exc: BaseException) -> UserError | None:
    """The :class:`UserError` behind ``exc``, or ``None`` when ``exc`` is not an expected
    failure."""
    for link in _chain(exc):
        if isinstance(link, UserError):
            return link
        if isinstance(link, FileNotFoundError):
            return UserError(str(link) if not link.filename else f"no such file: {link.filename}",
                             "check the path (it is resolved from the current directory)")
        for probe in (_s3, _database):
            found = probe(link)
            if found is not None:
                return found
    return None
