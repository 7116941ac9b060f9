-- epoch_totals (sql/040) kept from the inserted operator states themselves, not recomputed from
-- the 3.5 M-row table on every batch's marks.
--
-- Why: sql/040 recomputed every marked epoch from operator_shares (`s.epoch = ANY(epochs)`
-- through its BRIN index) in a statement trigger on epoch_normalizations. In a backfill that
-- statement runs in a plpgsql function of a long-lived worker session: after five runs its plan
-- becomes the generic one (one BRIN probe and bitmap heap scan per marked epoch, each reading
-- every block range of the array's epochs), and during a backfill the table's newest block
-- ranges are not summarized yet (autovacuum summarizes them later), so each probe also reads
-- the whole unsummarized tail. Measured on seed-scale data, batches of 50 epochs: ~15 ms per
-- batch at first, 0.35 s after 1,000 epochs, then 8-15 s per batch (most of the backfill's
-- server CPU that was neither reading documents nor COPYing rows).
--
-- Now a statement trigger on INSERT into operator_shares adds the statement's own rows (its
-- transition table) to their epochs' totals: the backfill COPYs a batch's states in one
-- statement, so this reads nothing but the batch. The stored row of an epoch stays the exact
-- aggregate of the epoch's rows at every statement boundary:
--   - INSERT adds the inserted rows (an epoch whose rows arrive in two statements gets both:
--     count and sums add up; a sum stays NULL only while no row of the epoch carries a value);
--   - DELETE drops the deleted epochs' rows (sql/040, unchanged): their aggregate is unknown
--     until the epoch is written again or refreshed;
--   - UPDATE recomputes the updated epochs from the table (new here: sql/040 left totals stale
--     after an UPDATE until the next mark);
--   - TRUNCATE empties epoch_totals (new: sql/040 kept the old totals, which a later insert
--     would now add to).
-- The marks trigger then only repairs what that cannot have made right: a marked epoch whose
-- stored row is missing (an epoch without states: operators = 0 and NULL sums, as before; or
-- rows deleted and only partly re-inserted) or counts another number of operators than the mark.
-- Readers still use a stored row only when its `operators` equals the epoch's operator_count
-- and compute any other epoch live (shareprice.queries.totals), so a total can be slow but
-- never stale.
--
-- Trigger order: PostgreSQL fires AFTER triggers of one event in name order, and INSERT ... ON
-- CONFLICT DO UPDATE fires the insert and the update trigger: `..._inserted` sorts before
-- `..._updated`, so the update's recomputation from the table comes last and wins.

CREATE FUNCTION epoch_totals_on_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO epoch_totals AS t
        (epoch, operators, total_stake, total_storage_fee, total_rewards)
    SELECT epoch, count(*), sum(stake_raw), sum(storage_fee_raw), sum(rewards_raw)
    FROM new_states
    GROUP BY epoch
    ON CONFLICT (epoch) DO UPDATE
    SET operators = t.operators + EXCLUDED.operators,
        -- NULL + x is x here: NULL means "no row of the epoch carries the value" (sql/040).
        total_stake = coalesce(t.total_stake + EXCLUDED.total_stake,
                               t.total_stake, EXCLUDED.total_stake),
        total_storage_fee = coalesce(t.total_storage_fee + EXCLUDED.total_storage_fee,
                                     t.total_storage_fee, EXCLUDED.total_storage_fee),
        total_rewards = coalesce(t.total_rewards + EXCLUDED.total_rewards,
                                 t.total_rewards, EXCLUDED.total_rewards),
        refreshed_at = now();
    RETURN NULL;
END;
$$;

CREATE FUNCTION epoch_totals_on_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM epoch_totals_refresh(
        ARRAY(SELECT epoch FROM old_states UNION SELECT epoch FROM new_states)
    );
    RETURN NULL;
END;
$$;

CREATE FUNCTION epoch_totals_on_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM epoch_totals;  -- DELETE: needs no TRUNCATE privilege
    RETURN NULL;
END;
$$;

-- Marked epochs whose stored totals cannot be right: recomputed from the table (normally none).
CREATE OR REPLACE FUNCTION epoch_totals_on_marks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM epoch_totals_refresh(ARRAY(
        SELECT DISTINCT m.epoch
        FROM changed_marks m
        LEFT JOIN epoch_totals t ON t.epoch = m.epoch
        WHERE t.operators IS DISTINCT FROM m.operator_count
    ));
    RETURN NULL;
END;
$$;

CREATE TRIGGER epoch_totals_states_inserted
    AFTER INSERT ON operator_shares
    REFERENCING NEW TABLE AS new_states
    FOR EACH STATEMENT EXECUTE FUNCTION epoch_totals_on_insert();

CREATE TRIGGER epoch_totals_states_updated
    AFTER UPDATE ON operator_shares
    REFERENCING OLD TABLE AS old_states NEW TABLE AS new_states
    FOR EACH STATEMENT EXECUTE FUNCTION epoch_totals_on_update();

CREATE TRIGGER epoch_totals_states_truncated
    AFTER TRUNCATE ON operator_shares
    FOR EACH STATEMENT EXECUTE FUNCTION epoch_totals_on_truncate();

-- Totals already stored were computed from the table at their marks (sql/040) and stay as they
-- are; a marked epoch whose stored count disagrees with its mark is recomputed (normally none).
SELECT epoch_totals_refresh(ARRAY(
    SELECT n.epoch
    FROM epoch_normalizations n
    LEFT JOIN epoch_totals t ON t.epoch = n.epoch
    WHERE t.operators IS DISTINCT FROM n.operator_count
));
