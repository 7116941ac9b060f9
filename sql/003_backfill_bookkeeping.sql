-- Bookkeeping of `shareprice backfill`: what ran, what each raw epoch was normalized from, and
-- what failed. The progress page reads these tables; they are small, so reading them every two
-- seconds costs nothing next to the 3.5 M-row data tables.

CREATE TABLE backfill_runs (
    run_id          BIGSERIAL PRIMARY KEY,
    started_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    -- running / succeeded / failed / interrupted. A 'running' row whose heartbeat is older than
    -- a few batches is shown as interrupted (the process died without saying so).
    status          TEXT NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    epoch_from      INTEGER,
    epoch_to        INTEGER,
    epochs_total    INTEGER NOT NULL DEFAULT 0,
    epochs_done     INTEGER NOT NULL DEFAULT 0,
    epochs_failed   INTEGER NOT NULL DEFAULT 0,
    -- Rows written per table, e.g. {"operator_share_prices": 123, "operator_shares": 123, ...}.
    rows_written    JSONB NOT NULL DEFAULT '{}'::jsonb,
    last_epoch      INTEGER,
    heartbeat_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    pid             INTEGER,
    host            TEXT,
    options         JSONB NOT NULL DEFAULT '{}'::jsonb,
    error           TEXT
);

CREATE TABLE backfill_errors (
    run_id      BIGINT NOT NULL REFERENCES backfill_runs (run_id) ON DELETE CASCADE,
    epoch       INTEGER NOT NULL,
    -- The parser's message: names the epoch, the entry (dump name and index) and the reason.
    reason      TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, epoch)
);

-- Which revision of each raw epoch the normalized tables hold. An epoch is pending when it has
-- no row here or its epochs.revision moved on. Written in the same transaction as the epoch's
-- normalized rows, so a killed backfill never leaves an epoch marked done without its rows.
CREATE TABLE epoch_normalizations (
    epoch           INTEGER PRIMARY KEY,
    revision        BIGINT NOT NULL,
    operator_count  INTEGER NOT NULL,
    run_id          BIGINT,
    normalized_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
