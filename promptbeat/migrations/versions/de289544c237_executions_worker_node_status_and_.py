"""executions: worker node, status and trigger index

Revision ID: de289544c237
Revises: f09a968195ba
Create Date: 2026-11-28 20:42:14.823719

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'de289544c237'
down_revision = 'f09a968195ba'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('worker', sa.String(length=255), nullable=True))
        batch_op.create_index('ix_executions_status_trigger', ['status', 'trigger'], unique=False)


def downgrade():
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_index('ix_executions_status_trigger')
        batch_op.drop_column('worker')

