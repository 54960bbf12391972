"""Issue 18: who started a run (`runs.origin`) and the hash chain over the runs' records.

Revision 0002 (after 0001). Runs recorded before it keep `origin` NULL (not known) and no seal
(`chain_seq` NULL): `runs --verify` counts them as older runs outside the chain. The chain's
place is unique (`ix_runs_chain_seq`), so two processes can never take the same one.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def _columns() -> list[sa.Column]:
    return [sa.Column('origin', sa.String(length=32), nullable=True),
            sa.Column('chain_seq', sa.Integer(), nullable=True),
            sa.Column('seal', sa.JSON(), nullable=True),
            sa.Column('record_sha256', sa.String(length=64), nullable=True),
            sa.Column('chain_sha256', sa.String(length=64), nullable=True)]


def upgrade() -> None:
    # like 0001, it adopts what is there already (a database built from newer models): adds only
    # the columns and the index that are missing
    found = sa.inspect(op.get_bind())
    have = {c["name"] for c in found.get_columns("runs")}
    indexes = {i["name"] for i in found.get_indexes("runs")}
    with op.batch_alter_table('runs', schema=None) as batch_op:
        for column in _columns():
            if column.name not in have: batch_op.add_column(column)
        if 'ix_runs_chain_seq' not in indexes:
            batch_op.create_index(batch_op.f('ix_runs_chain_seq'), ['chain_seq'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runs_chain_seq'))
        batch_op.drop_column('chain_sha256')
        batch_op.drop_column('record_sha256')
        batch_op.drop_column('seal')
        batch_op.drop_column('chain_seq')
        batch_op.drop_column('origin')
