"""Research sweeps: the `sweep_cells` table (issue 20), one row per finished grid cell.

Revision 0003 (after 0002, the runs' origin and hash chain of issue 18).

Keyed by the cell's settings hash and its data hash (`stockstock.sweep.cell_hash`, `data.data_hash`),
so a sweep run again computes only the cells not stored yet. A database made by the `engine`
branch before Alembic (its `create_all` made this table) is adopted: the table is created only when
it is missing. The table is a frozen copy written out here, not `stockstock.db.SweepCell`.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _table(meta: sa.MetaData) -> sa.Table:
    return sa.Table('sweep_cells', meta,
                    sa.Column('cell_hash', sa.String(length=64), nullable=False),
                    sa.Column('data_hash', sa.String(length=64), nullable=False),
                    sa.Column('settings', sa.JSON(), nullable=False),
                    sa.Column('figures', sa.JSON(), nullable=False),
                    sa.Column('series', sa.JSON(), nullable=False),
                    sa.Column('seconds', sa.Float(), nullable=False),
                    sa.Column('worker', sa.String(length=128), nullable=False),
                    sa.Column('finished_at', sa.DateTime(), nullable=False),
                    sa.PrimaryKeyConstraint('cell_hash', 'data_hash'))


def upgrade() -> None:
    bind = op.get_bind()
    if not sa.inspect(bind).has_table("sweep_cells"):
        _table(sa.MetaData()).create(bind)


def downgrade() -> None:
    _table(sa.MetaData()).drop(op.get_bind(), checkfirst=True)
