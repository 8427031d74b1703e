"""worker liveness: a heartbeat per worker process, and the claim and recoveries on each run

Revision ID: b3l1ve0ss001
Revises: b15r0e7r1e01
Each process that runs tasks keeps a row in runners; a run records the claim it is held by
(the process's id and a claim number), and how often it was started again after its worker died
or its message was lost.

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b3l1ve0ss001'
down_revision = 'b15r0e7r1e01'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'runners',
        sa.Column('id', sa.String(length=255), nullable=False),
        sa.Column('hostname', sa.String(length=255), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('heartbeat_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_runners')),
    )
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('runner', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('recoveries', sa.Integer(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_column('recoveries')
        batch_op.drop_column('runner')
    op.drop_table('runners')
