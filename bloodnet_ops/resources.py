"""Files the package ships: the SQL on top of the schema and the released weights.

They live at the top of the checkout (``sql/``, ``models/``) and reach the package through the
links ``bloodnet_ops/sql`` and ``bloodnet_ops/weights``, which setuptools copies into a wheel as
package data. Found through :mod:`importlib.resources`, so an editable checkout and a plain
``pip install .`` (the Dockerfile's) resolve the same names.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def sql_file(name: str) -> Path:
    """``sql/<name>`` as shipped with the package (``views.sql``, ``roles.sql``, ...)."""
    return Path(str(files("bloodnet_ops") / "sql" / name))


def released_model() -> Path:
    """The shipped weights, ``models/bloodnet.pt``."""
    return Path(str(files("bloodnet_ops") / "weights" / "bloodnet.pt"))
