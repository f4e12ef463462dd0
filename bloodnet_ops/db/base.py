"""The declarative base shared by every table module (core and audit/drift).

A fixed naming convention makes constraint names deterministic, so Alembic autogenerate and the
hand-tidied migrations agree on them, and ``alembic check`` finds no drift.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy import Date, DateTime, MetaData, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every ORM table. PostgreSQL types: TIMESTAMPTZ, JSONB and ``text[]``."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        date: Date(),
        dict[str, Any]: JSONB(),
        dict[str, float]: JSONB(),
        dict[str, str]: JSONB(),
        list[str]: ARRAY(Text()),
        str: Text(),
    }
