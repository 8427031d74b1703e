"""budgets: per-task spend limits, auto-pause on a budget stop, the spend ledger and batch runs' holds

Revision ID: b17budget001
Revises: batch17mode01

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b17budget001'
down_revision = 'batch17mode01'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.add_column(sa.Column('budget_usd_day', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('budget_usd_month', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('budget_tokens_day', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('budget_tokens_month', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('pause_on_budget', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('executions', sa.Column('budget_hold', sa.JSON(), nullable=True))
    op.create_table(
        'spend',
        sa.Column('scope', sa.Integer(), nullable=False),
        sa.Column('period', sa.String(length=8), nullable=False),
        sa.Column('period_start', sa.Date(), nullable=False),
        sa.Column('usd', sa.Numeric(20, 8), server_default='0', nullable=False),
        sa.Column('tokens', sa.BigInteger(), server_default='0', nullable=False),
        sa.PrimaryKeyConstraint('scope', 'period', 'period_start'),
    )


def downgrade():
    op.drop_table('spend')
    op.drop_column('executions', 'budget_hold')
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.drop_column('pause_on_budget')
        batch_op.drop_column('budget_tokens_month')
        batch_op.drop_column('budget_tokens_day')
        batch_op.drop_column('budget_usd_month')
        batch_op.drop_column('budget_usd_day')
