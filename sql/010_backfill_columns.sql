-- What the backfill needs beyond the foundation schema (issue 4).

-- The operator's status and nomination tax in each epoch, next to its stake state. Without them
-- the normalized tables could not say which operators were active in a past epoch (the
-- analytics view's "across active operators") nor show when a tax changed or a slash happened;
-- operators_metadata only keeps the latest. NULL for flat-export (Format B) documents, which do
-- not carry them. Adding nullable columns without a default rewrites nothing.
ALTER TABLE operator_shares
    ADD COLUMN status TEXT,
    ADD COLUMN nomination_tax SMALLINT CHECK (nomination_tax BETWEEN 0 AND 100);

-- The raw revision a failure was recorded for. A document the parser rejected is not retried
-- by every later incremental run (nor by every wake-up of `backfill --follow`): only when its
-- revision moves on (someone fixed or replaced it) or with `backfill --retry-failed`.
ALTER TABLE backfill_errors
    ADD COLUMN revision BIGINT;
