-- The primary keys of operator_share_prices and operator_shares carry the values readers fetch
-- (INCLUDE), so "these operators over all epochs" is an index-only range scan per operator.
--
-- Why: the backfill appends in epoch order, so one operator's ~3,700 rows lie on ~3,700
-- different heap pages (one per epoch, ~940 operators per page run). A whole-history request
-- for 4 operators therefore touched ~64,000 buffers. Warm, that is ~90 ms; with the pages out of
-- memory (after a restart, or a neighbour such as `shareprice check --full` reading gigabytes)
-- it is ~15,000 random reads: measured 57 s for `/api/epochs-v2?limit=all` at seed scale on
-- this machine, against 1.1 s with the rows in the key's leaf pages (which hold one operator's
-- epochs side by side). The cost: the keys grow from ~154 MB to ~170 MB (prices) and ~260 MB
-- (states) at seed scale, and every COPY maintains the wider key (the backfill's COPY floor
-- pays the same).
--
-- Index-only scans need the visibility map: autovacuum sets it after bulk inserts
-- (autovacuum_vacuum_insert_threshold); pages written since then are read from the heap as
-- before, so a follow-mode tail costs a few heap fetches, never a wrong answer.
DO $$
DECLARE
    pk text;
BEGIN
    SELECT conname INTO pk FROM pg_constraint
    WHERE conrelid = 'operator_share_prices'::regclass AND contype = 'p';
    EXECUTE format('ALTER TABLE operator_share_prices DROP CONSTRAINT %I', pk);
    ALTER TABLE operator_share_prices
        ADD CONSTRAINT operator_share_prices_pkey PRIMARY KEY (operator_id, epoch)
        INCLUDE (share_price_perq);

    SELECT conname INTO pk FROM pg_constraint
    WHERE conrelid = 'operator_shares'::regclass AND contype = 'p';
    EXECUTE format('ALTER TABLE operator_shares DROP CONSTRAINT %I', pk);
    ALTER TABLE operator_shares
        ADD CONSTRAINT operator_shares_pkey PRIMARY KEY (operator_id, epoch)
        INCLUDE (stake_raw, shares_raw, rewards_raw);
END
$$;
