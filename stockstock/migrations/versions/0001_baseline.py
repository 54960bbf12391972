"""Baseline: the schema of stockstock 0.1.0 (main before Alembic), every table and index.

A database made before Alembic (by `create_all` plus the old add-missing-columns step) has some
or all of these tables and no `alembic_version`. This revision *adopts* it: tables that are
missing are created, columns that are missing are added (nullable, as the old step did: existing
rows get NULL), nothing that exists is touched. On an empty database it simply creates the schema.
The tables are a frozen copy written out here, not `stockstock.db.Base`: later revisions change
the models, this one must keep meaning the 0.1.0 schema.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables(meta: sa.MetaData) -> list[sa.Table]:
    "The 0.1.0 tables, as Alembic's autogenerate wrote them from the models of that release."
    return [
        sa.Table('listings', meta,
                 sa.Column('symbol', sa.String(length=8), nullable=False),
                 sa.Column('exchange', sa.String(length=4), nullable=False),
                 sa.Column('name', sa.Text(), nullable=True),
                 sa.Column('resolved_at', sa.DateTime(), nullable=False),
                 sa.PrimaryKeyConstraint('symbol')),
        sa.Table('notices', meta,
                 sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
                 sa.Column('key', sa.String(length=160), nullable=False),
                 sa.Column('kind', sa.String(length=32), nullable=False),
                 sa.Column('run_id', sa.String(length=64), nullable=True),
                 sa.Column('text', sa.Text(), nullable=False),
                 sa.Column('status', sa.String(length=16), nullable=False),
                 sa.Column('attempts', sa.Integer(), nullable=False),
                 sa.Column('error', sa.Text(), nullable=True),
                 sa.Column('created_at', sa.DateTime(), nullable=False),
                 sa.Column('sent_at', sa.DateTime(), nullable=True),
                 sa.PrimaryKeyConstraint('id'),
                 sa.UniqueConstraint('key')),
        sa.Table('ohlcv', meta,
                 sa.Column('symbol', sa.String(length=8), nullable=False),
                 sa.Column('date', sa.Date(), nullable=False),
                 sa.Column('open', sa.Float(), nullable=False),
                 sa.Column('high', sa.Float(), nullable=False),
                 sa.Column('low', sa.Float(), nullable=False),
                 sa.Column('close', sa.Float(), nullable=False),
                 sa.Column('volume', sa.Float(), nullable=False),
                 sa.Column('source', sa.String(length=32), nullable=False),
                 sa.PrimaryKeyConstraint('symbol', 'date')),
        sa.Table('portfolio_snapshots', meta,
                 sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
                 sa.Column('run_id', sa.String(length=64), nullable=False),
                 sa.Column('as_of', sa.DateTime(), nullable=False),
                 sa.Column('cash', sa.Float(), nullable=False),
                 sa.Column('equity', sa.Float(), nullable=False),
                 sa.Column('positions', sa.JSON(), nullable=False),
                 sa.Column('daily_pnl', sa.Float(), nullable=True),
                 sa.PrimaryKeyConstraint('id'),
                 sa.Index('ix_portfolio_snapshots_run_id', 'run_id')),
        sa.Table('risk_events', meta,
                 sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
                 sa.Column('run_id', sa.String(length=64), nullable=False),
                 sa.Column('as_of', sa.DateTime(), nullable=False),
                 sa.Column('kind', sa.String(length=32), nullable=False),
                 sa.Column('symbol', sa.String(length=8), nullable=True),
                 sa.Column('detail', sa.JSON(), nullable=False),
                 sa.PrimaryKeyConstraint('id'),
                 sa.Index('ix_risk_events_run_id', 'run_id')),
        sa.Table('runs', meta,
                 sa.Column('run_id', sa.String(length=64), nullable=False),
                 sa.Column('as_of', sa.DateTime(), nullable=False),
                 sa.Column('mode', sa.String(length=8), nullable=False),
                 sa.Column('status', sa.String(length=16), nullable=False),
                 sa.Column('reason', sa.Text(), nullable=True),
                 sa.Column('params', sa.JSON(), nullable=False),
                 sa.Column('git_commit', sa.String(length=64), nullable=True),
                 sa.Column('model_sha256', sa.String(length=64), nullable=True),
                 sa.Column('data_hash', sa.String(length=64), nullable=True),
                 sa.Column('notebook_path', sa.Text(), nullable=True),
                 sa.Column('notebook_sha256', sa.String(length=64), nullable=True),
                 sa.Column('html_sha256', sa.String(length=64), nullable=True),
                 sa.Column('replay_of', sa.String(length=64), nullable=True),
                 sa.Column('n_signals', sa.Integer(), nullable=False),
                 sa.Column('n_orders', sa.Integer(), nullable=False),
                 sa.Column('equity', sa.Float(), nullable=True),
                 sa.Column('pnl', sa.Float(), nullable=True),
                 sa.Column('started_at', sa.DateTime(), nullable=False),
                 sa.Column('finished_at', sa.DateTime(), nullable=True),
                 sa.Column('duration_s', sa.Float(), nullable=True),
                 sa.PrimaryKeyConstraint('run_id')),
        sa.Table('signals', meta,
                 sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
                 sa.Column('run_id', sa.String(length=64), nullable=False),
                 sa.Column('as_of', sa.DateTime(), nullable=False),
                 sa.Column('bar_date', sa.Date(), nullable=True),
                 sa.Column('symbol', sa.String(length=8), nullable=False),
                 sa.Column('action', sa.String(length=8), nullable=False),
                 sa.Column('confidence', sa.Float(), nullable=True),
                 sa.Column('probabilities', sa.JSON(), nullable=False),
                 sa.Column('features', sa.JSON(), nullable=False),
                 sa.Column('model_sha256', sa.String(length=64), nullable=True),
                 sa.Column('price', sa.Float(), nullable=True),
                 sa.Column('note', sa.Text(), nullable=True),
                 sa.Column('outcome', sa.Text(), nullable=True),
                 sa.Column('contributions', sa.JSON(), nullable=True),
                 sa.PrimaryKeyConstraint('id'),
                 sa.Index('ix_signals_run_id', 'run_id')),
        sa.Table('sim_account', meta,
                 sa.Column('id', sa.Integer(), nullable=False),
                 sa.Column('cash', sa.Float(), nullable=False),
                 sa.Column('initial_cash', sa.Float(), nullable=False),
                 sa.PrimaryKeyConstraint('id')),
        sa.Table('sim_orders', meta,
                 sa.Column('order_id', sa.String(length=32), nullable=False),
                 sa.Column('client_key', sa.String(length=96), nullable=False),
                 sa.Column('trade_date', sa.Date(), nullable=False),
                 sa.Column('symbol', sa.String(length=8), nullable=False),
                 sa.Column('side', sa.String(length=4), nullable=False),
                 sa.Column('qty', sa.Integer(), nullable=False),
                 sa.Column('limit_price', sa.Float(), nullable=False),
                 sa.Column('status', sa.String(length=16), nullable=False),
                 sa.Column('filled_qty', sa.Integer(), nullable=False),
                 sa.Column('fill_price', sa.Float(), nullable=True),
                 sa.Column('commission', sa.Float(), nullable=False),
                 sa.Column('reject_reason', sa.Text(), nullable=True),
                 sa.Column('created_at', sa.DateTime(), nullable=False),
                 sa.PrimaryKeyConstraint('order_id'),
                 sa.UniqueConstraint('client_key')),
        sa.Table('sim_positions', meta,
                 sa.Column('symbol', sa.String(length=8), nullable=False),
                 sa.Column('qty', sa.Integer(), nullable=False),
                 sa.Column('avg_price', sa.Float(), nullable=False),
                 sa.PrimaryKeyConstraint('symbol')),
        sa.Table('system_state', meta,
                 sa.Column('key', sa.String(length=64), nullable=False),
                 sa.Column('value', sa.JSON(), nullable=False),
                 sa.Column('updated_at', sa.DateTime(), nullable=False),
                 sa.PrimaryKeyConstraint('key')),
        sa.Table('trades', meta,
                 sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
                 sa.Column('client_key', sa.String(length=96), nullable=False),
                 sa.Column('run_id', sa.String(length=64), nullable=False),
                 sa.Column('slot', sa.DateTime(), nullable=False),
                 sa.Column('symbol', sa.String(length=8), nullable=False),
                 sa.Column('side', sa.String(length=4), nullable=False),
                 sa.Column('qty', sa.Integer(), nullable=False),
                 sa.Column('limit_price', sa.Float(), nullable=False),
                 sa.Column('order_type', sa.String(length=8), nullable=False),
                 sa.Column('reason', sa.String(length=32), nullable=False),
                 sa.Column('status', sa.String(length=16), nullable=False),
                 sa.Column('broker_order_id', sa.String(length=64), nullable=True),
                 sa.Column('filled_qty', sa.Integer(), nullable=False),
                 sa.Column('avg_fill_price', sa.Float(), nullable=True),
                 sa.Column('commission', sa.Float(), nullable=False),
                 sa.Column('error', sa.Text(), nullable=True),
                 sa.Column('intent_at', sa.DateTime(), nullable=True),
                 sa.Column('submitted_at', sa.DateTime(), nullable=True),
                 sa.Column('last_fill_at', sa.DateTime(), nullable=True),
                 sa.Column('fills', sa.JSON(), nullable=False),
                 sa.Column('replaces', sa.String(length=96), nullable=True),
                 sa.Column('created_at', sa.DateTime(), nullable=False),
                 sa.Column('updated_at', sa.DateTime(), nullable=False),
                 sa.PrimaryKeyConstraint('id'),
                 sa.UniqueConstraint('client_key'),
                 sa.Index('ix_trades_run_id', 'run_id')),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    have = set(inspector.get_table_names())
    for table in _tables(sa.MetaData()):
        if table.name not in have:
            table.create(bind)                                  # with its indexes
            continue
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in columns:
                op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(_tables(sa.MetaData())):
        table.drop(bind, checkfirst=True)
