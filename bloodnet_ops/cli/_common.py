"""Helpers shared by the CLI families."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def emit_json(doc: Any) -> None:
    """Write exactly one JSON document to stdout (the contract); nothing else goes to stdout."""
    sys.stdout.write(json.dumps(doc, default=str))
    sys.stdout.write("\n")
    sys.stdout.flush()


def open_checked(uri: str) -> Any:
    """The source at ``uri``, tried once first: a store that is down, a missing bucket or
    folder, or bad credentials fail here in two lines, before any work is logged."""
    from bloodnet_ops.errors import UserError
    from bloodnet_ops.storage import open_source

    try:
        return open_source(uri, probe=True)
    except FileNotFoundError as exc:
        raise UserError(str(exc), "check the path (it is resolved from the current directory)",
                        code=2) from exc
    except ValueError as exc:
        raise UserError(f"bad SOURCE {uri!r}: {exc}", "give a folder or s3://bucket/prefix",
                        code=2) from exc


def check_model(path: str | Path | None) -> Path:
    """The checkpoint a command will use (default ``$BLOODNET_MODEL`` or models/bloodnet.pt),
    loaded once so a missing or damaged file fails before the night's work starts."""
    from bloodnet_ops.model.checkpoint import load_checkpoint
    from bloodnet_ops.model.predictor import default_model_path

    resolved = Path(path) if path else default_model_path()
    if not resolved.is_file():
        from bloodnet_ops.errors import UserError

        raise UserError(f"model file not found: {resolved}",
                        "pass --model PATH or set BLOODNET_MODEL to a checkpoint")
    load_checkpoint(resolved)
    return resolved


def check_database(url: str) -> None:
    """Connect once to ``url``: unreachable, refused login or no such database fail here."""
    from bloodnet_ops.db.session import make_engine

    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()
