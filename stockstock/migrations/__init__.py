"""Alembic's script directory for the StockStock schema: `env.py`, `script.py.mako`, `versions/`.

Not exported from a notebook: Alembic owns this folder's layout and writes its revision files
(`stockstock.db.new_migration`). `nbs/03_db.ipynb` explains the migrations and tests them; a
revision's id is its file's 4-digit prefix, and the history is one line (0001, 0002, ...).
"""
