"""channels and deliveries: channels picked by tasks, notify rules, a ledger of delivery attempts

Each task's webhook (webhook_url, webhook_format) becomes a channel of kind webhook or slack, one per
distinct URL and format, picked by the tasks that had it; notify_on ["every"] keeps their behaviour.
Migrated channels have no signing secret (the key that would encrypt one is not known here): they
send unsigned until one is generated (PATCH /api/channels/<id> with "secret": "").

Revision ID: d16delivery01
Revises: daily_user_timezone001

"""
from urllib.parse import urlsplit

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd16delivery01'
down_revision = 'daily_user_timezone001'
branch_labels = None
depends_on = None

NAME_CHARS = 100


def upgrade():
    op.create_table(
        'channels',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('url', sa.String(length=2000), nullable=True),
        sa.Column('secret_encrypted', sa.Text(), nullable=True),
        sa.Column('recipients', sa.JSON(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_table(
        'task_channels',
        sa.Column('task_id', sa.Integer(), nullable=False),
        sa.Column('channel_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['channel_id'], ['channels.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('task_id', 'channel_id'),
    )
    op.create_index('ix_task_channels_channel_id', 'task_channels', ['channel_id'])
    op.create_table(
        'deliveries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('execution_id', sa.Integer(), nullable=False),
        sa.Column('channel_id', sa.Integer(), nullable=True),
        sa.Column('channel_name', sa.String(length=100), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('code', sa.Integer(), nullable=True),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['channel_id'], ['channels.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['execution_id'], ['executions.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_deliveries_channel_id', 'deliveries', ['channel_id'])
    op.create_index('ix_deliveries_execution_id_id', 'deliveries', ['execution_id', 'id'])
    op.create_index('ix_deliveries_status', 'deliveries', ['status'])
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notify_on', sa.JSON(), nullable=False, server_default='["every"]'))
    _webhooks_to_channels()
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('webhook_format')
        batch_op.drop_column('webhook_url')
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_column('webhook_attempts')
        batch_op.drop_column('webhook_status')


def _webhooks_to_channels():
    """One channel per distinct (URL, format) of the tasks' webhooks, picked by each task that had it."""
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT id, webhook_url, webhook_format FROM tasks WHERE webhook_url IS NOT NULL AND webhook_url <> '' "
        "ORDER BY id")).all()
    channels = {}
    names = set()
    for task_id, url, kind in rows:
        key = (url, 'slack' if kind == 'slack' else 'webhook')
        if key not in channels:
            host = urlsplit(url).hostname or 'webhook'
            base = f"{key[1]} {host}"[:NAME_CHARS - 6]
            name, n = base, 1
            while name in names:
                n += 1
                name = f"{base} #{n}"
            names.add(name)
            channels[key] = bind.execute(sa.text(
                "INSERT INTO channels (name, kind, url, created_at, updated_at) "
                "VALUES (:name, :kind, :url, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC') RETURNING id"),
                {"name": name, "kind": key[1], "url": url}).scalar_one()
        bind.execute(sa.text("INSERT INTO task_channels (task_id, channel_id) VALUES (:task_id, :channel_id)"),
                     {"task_id": task_id, "channel_id": channels[key]})


def downgrade():
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook_status', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('webhook_attempts', sa.JSON(), nullable=True))
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook_url', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('webhook_format', sa.String(length=16), nullable=False, server_default='json'))
    # Each task keeps its first webhook or Slack channel; email channels have no place to go back to.
    op.execute(sa.text(
        "UPDATE tasks SET webhook_url = c.url, webhook_format = CASE WHEN c.kind = 'slack' THEN 'slack' ELSE 'json' END "
        "FROM (SELECT DISTINCT ON (tc.task_id) tc.task_id, ch.url, ch.kind FROM task_channels tc "
        "JOIN channels ch ON ch.id = tc.channel_id WHERE ch.kind IN ('webhook', 'slack') "
        "ORDER BY tc.task_id, ch.id) AS c WHERE tasks.id = c.task_id"))
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('notify_on')
    op.drop_index('ix_deliveries_status', table_name='deliveries')
    op.drop_index('ix_deliveries_execution_id_id', table_name='deliveries')
    op.drop_index('ix_deliveries_channel_id', table_name='deliveries')
    op.drop_table('deliveries')
    op.drop_index('ix_task_channels_channel_id', table_name='task_channels')
    op.drop_table('task_channels')
    op.drop_table('channels')
