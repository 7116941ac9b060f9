-- Per-epoch totals over every operator state (stake, storage fees, rewards), kept next to the
-- data for the HTTP API's epoch rows (`/api/epochs`, `/api/epochs-v2`).
--
-- Why stored: each old-API row carries the epoch's total stake and storage fees over all of its
-- operators, so a whole-history request (the old frontend's "All") would aggregate all ~3.5 M
-- operator states: 0.8-1 s at seed scale on this machine, for every request, while the maps of
-- the 4 operators it draws take ~0.1 s. Stored, it reads 3,734 small rows.
--
-- How it stays right: the backfill marks epochs in epoch_normalizations after writing all their
-- rows, in the same transaction; a statement trigger on those marks recomputes exactly the
-- marked epochs from operator_shares (`= ANY` of a batch: the BRIN index reads only their
-- blocks, ~50 epochs x ~940 rows per batch). Deleting operator states drops their epochs' totals.
-- Readers still verify: shareprice.queries.epoch_rows only uses a stored row whose `operators`
-- equals the epoch's operator_count in epoch_normalizations and computes any other epoch live,
-- so a total can be slow but never stale.
--
-- Values are exact NUMERIC sums; NULL where no operator state carries the value (storage fees
-- and rewards in flat exports).
CREATE TABLE epoch_totals (
    epoch              INTEGER PRIMARY KEY,
    operators          INTEGER NOT NULL CHECK (operators >= 0),
    total_stake        NUMERIC(48,0),
    total_storage_fee  NUMERIC(48,0),
    total_rewards      NUMERIC(48,0),
    refreshed_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Recompute the totals of the given epochs from operator_shares; an epoch without operator
-- states gets operators = 0 and NULL sums (so readers can tell "none" from "not stored").
CREATE FUNCTION epoch_totals_refresh(epochs integer[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(cardinality(epochs), 0) = 0 THEN
        RETURN;
    END IF;
    DELETE FROM epoch_totals WHERE epoch = ANY(epochs);
    INSERT INTO epoch_totals (epoch, operators, total_stake, total_storage_fee, total_rewards)
    SELECT e.epoch, count(s.epoch), sum(s.stake_raw), sum(s.storage_fee_raw), sum(s.rewards_raw)
    FROM unnest(epochs) AS e(epoch)
    LEFT JOIN operator_shares s ON s.epoch = e.epoch AND s.epoch = ANY(epochs)
    GROUP BY e.epoch;
END;
$$;

CREATE FUNCTION epoch_totals_on_marks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM epoch_totals_refresh(ARRAY(SELECT DISTINCT epoch FROM changed_marks));
    RETURN NULL;
END;
$$;

CREATE FUNCTION epoch_totals_on_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM epoch_totals WHERE epoch IN (SELECT DISTINCT epoch FROM old_states);
    RETURN NULL;
END;
$$;

-- INSERT ... ON CONFLICT DO UPDATE fires both, each with its own rows.
CREATE TRIGGER epoch_totals_marked
    AFTER INSERT ON epoch_normalizations
    REFERENCING NEW TABLE AS changed_marks
    FOR EACH STATEMENT EXECUTE FUNCTION epoch_totals_on_marks();

CREATE TRIGGER epoch_totals_remarked
    AFTER UPDATE ON epoch_normalizations
    REFERENCING NEW TABLE AS changed_marks
    FOR EACH STATEMENT EXECUTE FUNCTION epoch_totals_on_marks();

CREATE TRIGGER epoch_totals_states_deleted
    AFTER DELETE ON operator_shares
    REFERENCING OLD TABLE AS old_states
    FOR EACH STATEMENT EXECUTE FUNCTION epoch_totals_on_delete();

-- Data normalized before this migration, in one pass (not one ANY per epoch).
INSERT INTO epoch_totals (epoch, operators, total_stake, total_storage_fee, total_rewards)
SELECT n.epoch, count(s.epoch), sum(s.stake_raw), sum(s.storage_fee_raw), sum(s.rewards_raw)
FROM epoch_normalizations n
LEFT JOIN operator_shares s ON s.epoch = n.epoch
GROUP BY n.epoch;
