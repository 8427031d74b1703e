"""model fallback: fallbacks on tasks and connections; the model and connection that answered a run

Revision ID: f17fallback01
Revises: runs16search01

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'f17fallback01'
down_revision = 'runs16search01'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fallbacks', sa.JSON(), nullable=True))
    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fallbacks', sa.JSON(), nullable=True))
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('answered_model', sa.String(length=200), nullable=True))
        # No foreign key: the run keeps naming the connection that answered after it is deleted.
        batch_op.add_column(sa.Column('answered_connection_id', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_column('answered_connection_id')
        batch_op.drop_column('answered_model')
    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.drop_column('fallbacks')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('fallbacks')
