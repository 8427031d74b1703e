"""task name trigram index, for the dashboard's search

Revision ID: 3c6f1d2e8a41
Revises: be2aa61a7af7

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '3c6f1d2e8a41'
down_revision = 'be2aa61a7af7'
branch_labels = None
depends_on = None


def upgrade():
    # pg_trgm is a trusted extension: a role that may create objects in the database may add it.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index("ix_tasks_name_trgm", "tasks", ["name"], postgresql_using="gin",
                    postgresql_ops={"name": "gin_trgm_ops"})


def downgrade():
    op.drop_index("ix_tasks_name_trgm", table_name="tasks", postgresql_using="gin")
