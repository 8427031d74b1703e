"""user session version, so sign-out, a new password or a new role end existing sessions

Revision ID: a14se55i0n01
Revises: 3c6f1d2e8a41
Sessions opened before this revision carry no version and must sign in again.

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a14se55i0n01'
down_revision = '3c6f1d2e8a41'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_version', sa.Integer(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_version')
