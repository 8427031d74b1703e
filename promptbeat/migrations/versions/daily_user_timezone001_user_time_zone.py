"""users.timezone: the zone a user reads times in

Revision ID: daily_user_timezone001
Revises: d17accounts001
NULL until the browser reports its zone or the user picks one; pages show UTC meanwhile.

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'daily_user_timezone001'
down_revision = 'd17accounts001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('timezone', sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('timezone')
