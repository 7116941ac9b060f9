-- History of `shareprice check` and the integrity page: one row per run, one per check result,
-- so a check that starts failing (or getting slow) is visible next to its earlier passes.

CREATE TABLE integrity_runs (
    run_id       BIGSERIAL PRIMARY KEY,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    seconds      DOUBLE PRECISION NOT NULL CHECK (seconds >= 0),
    -- The worst status of the run's checks: fail > warn > pass.
    status       TEXT NOT NULL CHECK (status IN ('pass', 'warn', 'fail')),
    -- Raw-reading checks looked at a seeded sample of this many epochs; NULL = all epochs.
    sample_size  INTEGER CHECK (sample_size > 0),
    sample_seed  INTEGER,
    -- The checks asked for (`--only`); NULL = all.
    only_checks  TEXT[],
    -- Who ran it: 'cli' or 'dashboard'.
    source       TEXT NOT NULL DEFAULT 'cli',
    -- How much data was checked, to compare runs: {"raw_epochs": ..., "normalized_epochs": ...}.
    scale        JSONB NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE integrity_check_results (
    run_id    BIGINT NOT NULL REFERENCES integrity_runs (run_id) ON DELETE CASCADE,
    position  SMALLINT NOT NULL,
    name      TEXT NOT NULL,
    status    TEXT NOT NULL CHECK (status IN ('pass', 'warn', 'fail')),
    -- Offending rows (or epochs, or operators: each check's `proves` text says which).
    count     BIGINT NOT NULL CHECK (count >= 0),
    -- Up to 20 offending examples; exact numbers are JSON strings (u128 exceeds JSON's ints).
    examples  JSONB NOT NULL DEFAULT '[]'::jsonb,
    seconds   DOUBLE PRECISION NOT NULL CHECK (seconds >= 0),
    -- What was checked and how (sample, pairing, skipped rows), in words.
    note      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, position)
);

-- "This check's history": the page's per-check sparkline reads it newest first.
CREATE INDEX integrity_check_results_name ON integrity_check_results (name, run_id DESC);
