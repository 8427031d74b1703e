"""run search: a stored full-text search vector of each output with its GIN index, and an index on created_at

Revision ID: runs16search01
Revises: d16delivery01

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = 'runs16search01'
down_revision = 'd16delivery01'
branch_labels = None
depends_on = None

# As promptbeat.runs.search_vector.SEARCH_VECTOR_SQL when this migration was written: 'simple' words of
# the first 100,000 characters, each Chinese or Japanese character a word of its own.
SEARCH_VECTOR = (r"to_tsvector('simple'::regconfig, regexp_replace(left(coalesce(output, ''), 100000), "
                 r"'([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])', ' \1 ', 'g'))")


def upgrade():
    # Adding a stored generated column rewrites the executions table once, under a lock: on a large
    # database, run this migration in a quiet hour (docs/operations.md).
    op.add_column('executions', sa.Column('output_search', postgresql.TSVECTOR(),
                                          sa.Computed(SEARCH_VECTOR, persisted=True), nullable=True))
    op.create_index('ix_executions_output_search', 'executions', ['output_search'], unique=False,
                    postgresql_using='gin')
    op.create_index('ix_executions_created_at', 'executions', ['created_at'], unique=False)


def downgrade():
    op.drop_index('ix_executions_created_at', table_name='executions')
    op.drop_index('ix_executions_output_search', table_name='executions', postgresql_using='gin')
    op.drop_column('executions', 'output_search')
