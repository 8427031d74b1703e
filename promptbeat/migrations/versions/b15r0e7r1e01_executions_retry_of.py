"""executions.retry_of: the run a retry retries

Revision ID: b15r0e7r1e01
Revises: a14se55i0n01
The status column is a VARCHAR(16) with no check constraint, so the new state `cancelled` needs
no change to it.

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b15r0e7r1e01'
down_revision = 'a14se55i0n01'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retry_of', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_executions_retry_of_executions', 'executions', ['retry_of'], ['id'],
                                    ondelete='SET NULL')


def downgrade():
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_constraint('fk_executions_retry_of_executions', type_='foreignkey')
        batch_op.drop_column('retry_of')
