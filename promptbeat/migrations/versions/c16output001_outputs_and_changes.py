"""outputs and changes: a task's output schema and ignore patterns; a run's parsed output, changed and diff

Revision ID: c16output001
Revises: b3l1ve0ss001

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c16output001'
down_revision = 'b3l1ve0ss001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('output_schema', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('ignore_patterns', sa.JSON(), nullable=True))
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parsed_output', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('changed', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('diff', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_column('diff')
        batch_op.drop_column('changed')
        batch_op.drop_column('parsed_output')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('ignore_patterns')
        batch_op.drop_column('output_schema')
