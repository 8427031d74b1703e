"""Connections, attempts, cost, deadlines and webhooks

Revision ID: 5ffe769d3751
Revises: de289544c237
Create Date: 2026-11-28 20:42:44.970474

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5ffe769d3751'
down_revision = 'de289544c237'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('connections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('base_url', sa.String(length=2000), nullable=True),
    sa.Column('api_key_encrypted', sa.Text(), nullable=True),
    sa.Column('default_model', sa.String(length=200), nullable=True),
    sa.Column('extra_headers', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_connections')),
    sa.UniqueConstraint('name', name=op.f('uq_connections_name'))
    )
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cost_usd', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('prompt', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('error_class', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('deadline_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('webhook_status', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('webhook_attempts', sa.JSON(), nullable=True))
        batch_op.create_index('ix_executions_status_deadline_at', ['status', 'deadline_at'], unique=False)

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('connection_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('max_attempts', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('request_timeout_seconds', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('max_run_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('webhook_url', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('webhook_format', sa.String(length=16), nullable=False, server_default='json'))
        batch_op.create_foreign_key(batch_op.f('fk_tasks_connection_id_connections'), 'connections', ['connection_id'], ['id'], ondelete='SET NULL')



def downgrade():
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_tasks_connection_id_connections'), type_='foreignkey')
        batch_op.drop_column('webhook_format')
        batch_op.drop_column('webhook_url')
        batch_op.drop_column('max_run_seconds')
        batch_op.drop_column('request_timeout_seconds')
        batch_op.drop_column('max_attempts')
        batch_op.drop_column('connection_id')

    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_index('ix_executions_status_deadline_at')
        batch_op.drop_column('webhook_attempts')
        batch_op.drop_column('webhook_status')
        batch_op.drop_column('deadline_at')
        batch_op.drop_column('attempts')
        batch_op.drop_column('error_class')
        batch_op.drop_column('prompt')
        batch_op.drop_column('cost_usd')

    op.drop_table('connections')
