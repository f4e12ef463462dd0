"""Validation stores the chosen series: its object keys in slice order, with their ETags.

Inference reads them (``bloodnet_ops.db.scoring``) and fetches each blob once, instead of
listing the study's objects again and re-reading their headers to find the series that
validation had already chosen. Rows validated before this revision have NULL here; inference
skips such a study and says so (a ``--rescan`` revalidates it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_series_objects"
down_revision: str | None = "0003_dashboard_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "validation_results",
        sa.Column("series_objects", postgresql.JSONB(astext_type=sa.Text()), nullable=True,
                  comment="[[key, etag], ...] of the chosen series, in slice order"),
    )


def downgrade() -> None:
    # The views of sql/views.sql are applied after every upgrade to head (env.py); below head
    # they belong to the older code, so they go first (newest dependants first, no CASCADE).
    from bloodnet_ops.db.views import view_names

    for name in reversed(view_names()):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_column("validation_results", "series_objects")
