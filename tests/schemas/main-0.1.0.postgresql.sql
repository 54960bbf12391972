-- The schema of main at 848a847 (stockstock 0.1.0, before Alembic) for PostgreSQL: main refused
-- PostgreSQL, so this is the DDL its models compile to there (what create_all would have made).
-- Captured once from that commit's code; the migration tests load it, insert rows, upgrade,
-- and find every row.
CREATE TABLE listings (
	symbol VARCHAR(8) NOT NULL, 
	exchange VARCHAR(4) NOT NULL, 
	name TEXT, 
	resolved_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	PRIMARY KEY (symbol)
);
CREATE TABLE notices (
	id SERIAL NOT NULL, 
	key VARCHAR(160) NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	run_id VARCHAR(64), 
	text TEXT NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	error TEXT, 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	sent_at TIMESTAMP WITHOUT TIME ZONE, 
	PRIMARY KEY (id), 
	UNIQUE (key)
);
CREATE TABLE ohlcv (
	symbol VARCHAR(8) NOT NULL, 
	date DATE NOT NULL, 
	open FLOAT NOT NULL, 
	high FLOAT NOT NULL, 
	low FLOAT NOT NULL, 
	close FLOAT NOT NULL, 
	volume FLOAT NOT NULL, 
	source VARCHAR(32) NOT NULL, 
	PRIMARY KEY (symbol, date)
);
CREATE TABLE portfolio_snapshots (
	id SERIAL NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	as_of TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	cash FLOAT NOT NULL, 
	equity FLOAT NOT NULL, 
	positions JSON NOT NULL, 
	daily_pnl FLOAT, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_portfolio_snapshots_run_id ON portfolio_snapshots (run_id);
CREATE TABLE risk_events (
	id SERIAL NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	as_of TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	symbol VARCHAR(8), 
	detail JSON NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_risk_events_run_id ON risk_events (run_id);
CREATE TABLE runs (
	run_id VARCHAR(64) NOT NULL, 
	as_of TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	mode VARCHAR(8) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	reason TEXT, 
	params JSON NOT NULL, 
	git_commit VARCHAR(64), 
	model_sha256 VARCHAR(64), 
	data_hash VARCHAR(64), 
	notebook_path TEXT, 
	notebook_sha256 VARCHAR(64), 
	html_sha256 VARCHAR(64), 
	replay_of VARCHAR(64), 
	n_signals INTEGER NOT NULL, 
	n_orders INTEGER NOT NULL, 
	equity FLOAT, 
	pnl FLOAT, 
	started_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	finished_at TIMESTAMP WITHOUT TIME ZONE, 
	duration_s FLOAT, 
	PRIMARY KEY (run_id)
);
CREATE TABLE signals (
	id SERIAL NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	as_of TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	bar_date DATE, 
	symbol VARCHAR(8) NOT NULL, 
	action VARCHAR(8) NOT NULL, 
	confidence FLOAT, 
	probabilities JSON NOT NULL, 
	features JSON NOT NULL, 
	model_sha256 VARCHAR(64), 
	price FLOAT, 
	note TEXT, 
	outcome TEXT, 
	contributions JSON, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_signals_run_id ON signals (run_id);
CREATE TABLE sim_account (
	id SERIAL NOT NULL, 
	cash FLOAT NOT NULL, 
	initial_cash FLOAT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE sim_orders (
	order_id VARCHAR(32) NOT NULL, 
	client_key VARCHAR(96) NOT NULL, 
	trade_date DATE NOT NULL, 
	symbol VARCHAR(8) NOT NULL, 
	side VARCHAR(4) NOT NULL, 
	qty INTEGER NOT NULL, 
	limit_price FLOAT NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	filled_qty INTEGER NOT NULL, 
	fill_price FLOAT, 
	commission FLOAT NOT NULL, 
	reject_reason TEXT, 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	PRIMARY KEY (order_id), 
	UNIQUE (client_key)
);
CREATE TABLE sim_positions (
	symbol VARCHAR(8) NOT NULL, 
	qty INTEGER NOT NULL, 
	avg_price FLOAT NOT NULL, 
	PRIMARY KEY (symbol)
);
CREATE TABLE system_state (
	key VARCHAR(64) NOT NULL, 
	value JSON NOT NULL, 
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	PRIMARY KEY (key)
);
CREATE TABLE trades (
	id SERIAL NOT NULL, 
	client_key VARCHAR(96) NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	slot TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	symbol VARCHAR(8) NOT NULL, 
	side VARCHAR(4) NOT NULL, 
	qty INTEGER NOT NULL, 
	limit_price FLOAT NOT NULL, 
	order_type VARCHAR(8) NOT NULL, 
	reason VARCHAR(32) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	broker_order_id VARCHAR(64), 
	filled_qty INTEGER NOT NULL, 
	avg_fill_price FLOAT, 
	commission FLOAT NOT NULL, 
	error TEXT, 
	intent_at TIMESTAMP WITHOUT TIME ZONE, 
	submitted_at TIMESTAMP WITHOUT TIME ZONE, 
	last_fill_at TIMESTAMP WITHOUT TIME ZONE, 
	fills JSON NOT NULL, 
	replaces VARCHAR(96), 
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (client_key)
);
CREATE INDEX ix_trades_run_id ON trades (run_id);
