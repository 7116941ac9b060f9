-- History of the v1/v2 timing comparisons (the timings page and `shareprice timings`), so a
-- regression shows up against earlier runs on the same data.

CREATE TABLE timing_runs (
    run_id       BIGSERIAL PRIMARY KEY,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    -- running: in progress (or its process died: see finished_at); completed; stopped (by the
    -- user); timed_out (wall-clock limit); failed (error says why).
    status       TEXT NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'completed', 'stopped', 'timed_out', 'failed')),
    source       TEXT NOT NULL DEFAULT 'cli',
    -- runs, v1_runs, cold, shapes, limits: what was asked.
    options      JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- What the numbers were measured on: epochs, operators, rows (never the URL).
    scale        JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- How "cold" was made cold on this server (new connections; evicted buffers when possible).
    cold_method  TEXT,
    error        TEXT
);

-- One row per shape, path and cache state.
CREATE TABLE timing_results (
    run_id       BIGINT NOT NULL REFERENCES timing_runs (run_id) ON DELETE CASCADE,
    shape        TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    -- The request (operators, epoch range, last N) the shape resolved to.
    request      JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- v1 = raw JSON parsed in Python, v2 = normalized tables, floor = v2's SQL on a bare cursor.
    variant      TEXT NOT NULL CHECK (variant IN ('v1', 'v2', 'floor')),
    cache        TEXT NOT NULL CHECK (cache IN ('cold', 'warm')),
    runs_ms      DOUBLE PRECISION[] NOT NULL,
    median_ms    DOUBLE PRECISION,
    min_ms       DOUBLE PRECISION,
    max_ms       DOUBLE PRECISION,
    rows         BIGINT,
    -- Size of the result: polars estimated_size for v1/v2, bytes on the wire for floor.
    bytes        BIGINT,
    -- Python peak allocation during one extra run under tracemalloc.
    peak_bytes   BIGINT,
    -- v1 and v2 returned equal frames (set on the v1 and v2 rows; NULL when v1 did not run).
    equal        BOOLEAN,
    error        TEXT,
    PRIMARY KEY (run_id, shape, variant, cache)
);

-- EXPLAIN (ANALYZE, BUFFERS) of the SQL behind each path, as measured in the run.
CREATE TABLE timing_plans (
    run_id   BIGINT NOT NULL REFERENCES timing_runs (run_id) ON DELETE CASCADE,
    shape    TEXT NOT NULL,
    variant  TEXT NOT NULL CHECK (variant IN ('v1', 'v2')),
    plan     TEXT NOT NULL,
    PRIMARY KEY (run_id, shape, variant)
);
