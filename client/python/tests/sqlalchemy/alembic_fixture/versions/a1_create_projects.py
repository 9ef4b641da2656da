"""Create the projects and tasks tables, with a foreign key, an index and
an ENUM type.

Revision ID: a1
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mig_project",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(80), nullable=False, unique=True),
    )
    op.create_table(
        "mig_task",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("mig_project.id"), nullable=False),
        sa.Column("state", sa.Enum("open", "done", name="mig_task_state"), nullable=False),
    )
    op.create_index("mig_task_project_idx", "mig_task", ["project_id"])
    op.bulk_insert(
        sa.table("mig_project", sa.column("id", sa.Integer), sa.column("name", sa.String)),
        [{"id": 1, "name": "broker"}, {"id": 2, "name": "dialect"}],
    )


def downgrade() -> None:
    op.drop_index("mig_task_project_idx", table_name="mig_task")
    op.drop_table("mig_task")
    op.drop_table("mig_project")
    sa.Enum(name="mig_task_state").drop(op.get_bind())
