"""batch mode: tasks.batch, executions.batch_id and batch_request, and the provider_batches table

Revision ID: batch17mode01
Revises: f17fallback01

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'batch17mode01'
down_revision = 'f17fallback01'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('tasks', sa.Column('batch', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('executions', sa.Column('batch_id', sa.String(length=100), nullable=True))
    op.add_column('executions', sa.Column('batch_request', sa.JSON(), nullable=True))
    op.create_table(
        'provider_batches',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('provider_id', sa.String(length=100), nullable=False),
        sa.Column('connection_id', sa.Integer(), nullable=True),
        sa.Column('model', sa.String(length=200), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('run_count', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('polled_at', sa.DateTime(), nullable=True),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('provider_id'),
    )
    op.create_index('ix_provider_batches_status_polled_at', 'provider_batches', ['status', 'polled_at'])


def downgrade():
    op.drop_index('ix_provider_batches_status_polled_at', table_name='provider_batches')
    op.drop_table('provider_batches')
    op.drop_column('executions', 'batch_request')
    op.drop_column('executions', 'batch_id')
    op.drop_column('tasks', 'batch')
