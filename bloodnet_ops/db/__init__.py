"""The results database: typed models, Alembic migrations, engines and batched upserts.

- ``base``       the declarative base and naming convention
- ``models``     core tables (sites, manifest, studies, series, validation, findings, ...)
- ``session``    ``make_engine``, ``migrate``, ``session_scope``, ``with_retries``, ``apply_sql``
- ``repo``       the writers and readers the pipeline uses (``INSERT ... ON CONFLICT``)
"""

from bloodnet_ops.db.session import make_engine, migrate, session_scope, with_retries

__all__ = ["make_engine", "migrate", "session_scope", "with_retries"]
