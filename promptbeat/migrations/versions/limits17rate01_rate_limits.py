"""rate limits: connections' rpm, tpm and concurrency limits; tasks' jitter and first-run delay; waiting runs

Revision ID: limits17rate01
Revises: b17budget001

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'limits17rate01'
down_revision = 'b17budget001'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('connections', sa.Column('rpm_limit', sa.Integer(), nullable=True))
    op.add_column('connections', sa.Column('tpm_limit', sa.Integer(), nullable=True))
    op.add_column('connections', sa.Column('max_concurrency', sa.Integer(), nullable=True))
    op.add_column('tasks', sa.Column('jitter_seconds', sa.Integer(), server_default='0', nullable=False))
    op.add_column('tasks', sa.Column('first_run_delay_seconds', sa.Integer(), server_default='0', nullable=False))
    op.add_column('executions', sa.Column('wait_reason', sa.String(length=32), nullable=True))
    op.add_column('executions', sa.Column('not_before', sa.DateTime(), nullable=True))


def downgrade():
    op.drop_column('executions', 'not_before')
    op.drop_column('executions', 'wait_reason')
    op.drop_column('tasks', 'first_run_delay_seconds')
    op.drop_column('tasks', 'jitter_seconds')
    op.drop_column('connections', 'max_concurrency')
    op.drop_column('connections', 'tpm_limit')
    op.drop_column('connections', 'rpm_limit')
