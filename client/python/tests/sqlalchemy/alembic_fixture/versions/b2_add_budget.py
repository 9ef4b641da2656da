"""Add a budget column with a server default, rename a column, and backfill
data in the same migration.

Revision ID: b2
Revises: a1
"""

import sqlalchemy as sa
from alembic import op

revision = "b2"
down_revision = "a1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "mig_project",
        sa.Column("budget", sa.Numeric(12, 2), nullable=False, server_default="0"),
    )
    op.alter_column("mig_project", "name", new_column_name="title")
    op.execute("UPDATE mig_project SET budget = 1000.50 WHERE title = 'broker'")


def downgrade() -> None:
    op.alter_column("mig_project", "title", new_column_name="name")
    op.drop_column("mig_project", "budget")
