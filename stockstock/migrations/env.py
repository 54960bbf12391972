"""Alembic environment: migrate the connection `stockstock.db.upgrade_schema` hands over, or (the
`alembic` command line) the database named by `-x db_url=...`, as `stockstock.db` opens it."""
from __future__ import annotations

from alembic import context

from stockstock.db import Base, database_url, make_engine


def _migrate(connection) -> None:
    # transactional_ddl: SQLite's DDL runs inside the caller's BEGIN IMMEDIATE too, so a migration
    # that fails half-way leaves nothing behind; render_as_batch: SQLite's ALTER TABLE is limited
    context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True,
                      render_as_batch=True, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _migrate(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("db_url", "sqlite:///data/stockstock.db")
    engine = make_engine(database_url(url)[1])
    with engine.begin() as conn:
        _migrate(conn)
    engine.dispose()
