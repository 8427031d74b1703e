"""Schedule semantics: bounds, one-off, overlap, pause, slots

Revision ID: caec02a66c18
Revises: 5ffe769d3751
Create Date: 2026-11-28 20:42:43.526310

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'caec02a66c18'
down_revision = '5ffe769d3751'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('slot', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('catch_up', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_unique_constraint('uq_executions_task_id_slot', ['task_id', 'slot'])

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('start_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('end_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('max_runs', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('run_count', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('completed_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('overlap_policy', sa.String(length=8), nullable=False, server_default='skip'))
        batch_op.add_column(sa.Column('catchup_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('pause_note', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('auto_pause_after', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('consecutive_failures', sa.Integer(), nullable=False, server_default='0'))


def downgrade():
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('consecutive_failures')
        batch_op.drop_column('auto_pause_after')
        batch_op.drop_column('pause_note')
        batch_op.drop_column('catchup_seconds')
        batch_op.drop_column('overlap_policy')
        batch_op.drop_column('completed_at')
        batch_op.drop_column('run_count')
        batch_op.drop_column('max_runs')
        batch_op.drop_column('end_at')
        batch_op.drop_column('start_at')
        batch_op.drop_column('run_at')

    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_constraint('uq_executions_task_id_slot', type_='unique')
        batch_op.drop_column('catch_up')
        batch_op.drop_column('slot')
