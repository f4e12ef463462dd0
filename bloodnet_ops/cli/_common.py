"""Helpers shared by the CLI families."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit_json(doc: Any) -> None:
    """Write exactly one JSON document to stdout (the contract); nothing else goes to stdout."""
    sys.stdout.write(json.dumps(doc, default=str))
    sys.stdout.write("\n")
    sys.stdout.flush()
