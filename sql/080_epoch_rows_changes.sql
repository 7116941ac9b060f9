-- Which epochs' normalized rows changed since the integrity checks last read them: a mark per
-- epoch and writing transaction, left by statement triggers, so an incremental `shareprice
-- check` recomputes the digest (sql/041, 060) of those epochs only instead of hashing all
-- ~10.6 M normalized rows at seed scale on every run (~3 s of server time, most of a run that
-- issue 13 wants under 5 s after 10 new epochs).
--
-- Why marks and not digests kept up to date by the triggers (xor the hashes of each
-- statement's rows in and out): that was tried first; hashing every written row costs
-- ~0.7 us per row in the triggers (~5.6 s of server CPU per seed-scale backfill, ~4 % of it,
-- against the 2x-of-COPY target of issue 14), where a DISTINCT over the statement's epochs
-- costs ~0.12 us per row. The digest is then computed when, and for the epochs where, a check
-- needs it: the few epochs a follow batch wrote, or every epoch once after a full backfill.
--
-- The rule (shareprice/checks/runs.py): an epoch verified at some revision and digest is
-- unchanged while its raw revision is the same and no mark names it, or while its digest,
-- recomputed because marks name it, is still the verified one (a re-backfill that wrote the
-- same rows). A run that saves deletes the marks its digests accounted for: those visible in
-- its snapshot (pg_visible_in_snapshot of the marking transaction), so a write committed while
-- the run was reading keeps its mark for the next run.
--
-- What this trusts: that writes go through the triggers. A write that bypasses them
-- (session_replication_role = replica, a disabled trigger, a data-only pg_restore with
-- --disable-triggers) leaves no mark; every --full or --sample run recomputes the digests of
-- the epochs it reads and the `verified_digests_hold` check fails on a verified, unmarked
-- epoch whose rows no longer hash to its verified digest.

CREATE TABLE epoch_rows_changes (
    -- NULL: every epoch (a TRUNCATE cannot say which).
    epoch       INTEGER,
    -- The writing transaction, to tell whether a run's snapshot saw the change.
    changed_by  XID8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX epoch_rows_changes_epoch ON epoch_rows_changes (epoch);

-- The statement trigger of every table the digest covers: TG_ARGV[0] is the column holding
-- the epoch a row belongs to. Dynamic SQL because the transition tables a statement may name
-- depend on the event (an INSERT trigger has no old_rows).
CREATE FUNCTION epoch_rows_mark_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO epoch_rows_changes (epoch) VALUES (NULL);
        RETURN NULL;
    END IF;
    EXECUTE CASE TG_OP
        WHEN 'INSERT' THEN format(
            'INSERT INTO epoch_rows_changes (epoch) SELECT DISTINCT %1$I FROM new_rows',
            TG_ARGV[0])
        WHEN 'DELETE' THEN format(
            'INSERT INTO epoch_rows_changes (epoch) SELECT DISTINCT %1$I FROM old_rows',
            TG_ARGV[0])
        ELSE format(
            'INSERT INTO epoch_rows_changes (epoch) '
            'SELECT %1$I FROM old_rows UNION SELECT %1$I FROM new_rows', TG_ARGV[0])
    END;
    RETURN NULL;
END;
$$;

-- Four triggers per table (a trigger with transition tables serves one event): the five row
-- tables the digest hashes, and the two per-epoch tables whose columns it includes.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT * FROM (VALUES
            ('operator_share_prices', 'epoch'),
            ('operator_shares', 'epoch'),
            ('operator_chain_share_prices', 'domain_epoch'),
            ('nominator_positions', 'from_epoch'),
            ('nominator_withdrawals', 'from_epoch'),
            ('epoch_normalizations', 'epoch'),
            ('epoch_positions', 'epoch')
        ) AS v (tab, epoch_column)
    LOOP
        EXECUTE format(
            'CREATE TRIGGER %1$s AFTER INSERT ON %2$I REFERENCING NEW TABLE AS new_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION epoch_rows_mark_changed(%3$L)',
            t.tab || '_changes_inserted', t.tab, t.epoch_column);
        EXECUTE format(
            'CREATE TRIGGER %1$s AFTER DELETE ON %2$I REFERENCING OLD TABLE AS old_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION epoch_rows_mark_changed(%3$L)',
            t.tab || '_changes_deleted', t.tab, t.epoch_column);
        EXECUTE format(
            'CREATE TRIGGER %1$s AFTER UPDATE ON %2$I '
            'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION epoch_rows_mark_changed(%3$L)',
            t.tab || '_changes_updated', t.tab, t.epoch_column);
        EXECUTE format(
            'CREATE TRIGGER %1$s AFTER TRUNCATE ON %2$I '
            'FOR EACH STATEMENT EXECUTE FUNCTION epoch_rows_mark_changed(%3$L)',
            t.tab || '_changes_truncated', t.tab, t.epoch_column);
    END LOOP;
END;
$$;

-- Rows written before this migration: every epoch counts as changed once (one wildcard mark),
-- so the first run after it recomputes every digest (and re-reads nothing whose digest is
-- still its verified one).
INSERT INTO epoch_rows_changes (epoch) VALUES (NULL);

-- sql/060's digest for the given epochs only, same text: what an incremental run computes for
-- the marked epochs (epoch_rows_digests() stays the one for every epoch: a filter on a
-- function argument is not planned away, and cost it 60 % more). The BETWEEN bounds let each
-- table's epoch BRIN read only the block ranges of those epochs.
CREATE FUNCTION epoch_rows_digests_of(epochs integer[])
RETURNS TABLE (epoch integer, revision bigint, rows_digest text)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH wanted AS (
        SELECT coalesce(min(e), 0) AS lo, coalesce(max(e), -1) AS hi
        FROM unnest(epochs) e
    ), prices AS (
        SELECT p.epoch, count(*) AS n,
               bit_xor(hash_record_extended(
                   ROW(p.operator_id, p.share_price_perq, p.source), p.epoch)) AS h
        FROM operator_share_prices p, wanted w
        WHERE p.epoch = ANY(epochs) AND p.epoch BETWEEN w.lo AND w.hi
        GROUP BY p.epoch
    ), states AS (
        SELECT s.epoch, count(*) AS n,
               bit_xor(hash_record_extended(
                   ROW(s.operator_id, s.stake_raw, s.shares_raw, s.storage_fee_raw,
                       s.rewards_raw, s.status, s.nomination_tax), s.epoch)) AS h
        FROM operator_shares s, wanted w
        WHERE s.epoch = ANY(epochs) AND s.epoch BETWEEN w.lo AND w.hi
        GROUP BY s.epoch
    ), chain AS (
        SELECT c.domain_epoch AS epoch, count(*) AS n,
               bit_xor(hash_record_extended(
                   ROW(c.operator_id, c.domain_id, c.shares_per_stake_perq, c.seen_in_epoch),
                   c.domain_epoch)) AS h
        FROM operator_chain_share_prices c
        WHERE c.domain_epoch = ANY(epochs)
        GROUP BY c.domain_epoch
    ), positions AS (
        SELECT p.from_epoch AS epoch, count(*) AS n,
               bit_xor(hash_record_extended(
                   ROW(p.operator_id, p.account, p.known_shares, p.known_storage_fee,
                       p.pending_domain_id, p.pending_epoch, p.pending_amount,
                       p.pending_storage_fee, p.effective_shares, p.deposit_on_hold),
                   p.from_epoch)) AS h
        FROM nominator_positions p, wanted w
        WHERE p.from_epoch = ANY(epochs) AND p.from_epoch BETWEEN w.lo AND w.hi
        GROUP BY p.from_epoch
    ), withdrawals AS (
        SELECT w.from_epoch AS epoch, count(*) AS n,
               bit_xor(hash_record_extended(
                   ROW(w.operator_id, w.account, w.total_amount, w.total_storage_fee,
                       w.in_shares_domain_id, w.in_shares_epoch, w.in_shares_unlock_block,
                       w.in_shares, w.in_shares_storage_fee_refund, w.unlocking),
                   w.from_epoch)) AS h
        FROM nominator_withdrawals w, wanted b
        WHERE w.from_epoch = ANY(epochs) AND w.from_epoch BETWEEN b.lo AND b.hi
        GROUP BY w.from_epoch
    )
    SELECT n.epoch, e.revision,
           format('r2|%s|%s|%s:%s|%s:%s|c%s:%s|p%s|%s|%s|%s:%s|%s:%s',
                  n.revision, n.operator_count,
                  coalesce(p.n, 0), p.h, coalesce(s.n, 0), s.h,
                  coalesce(c.n, 0), c.h,
                  ep.base_revision, ep.head_domain_number, ep.positions, ep.withdrawals,
                  coalesce(np.n, 0), np.h, coalesce(nw.n, 0), nw.h)
    FROM epoch_normalizations n
    JOIN epochs e ON e.epoch = n.epoch
    LEFT JOIN prices p ON p.epoch = n.epoch
    LEFT JOIN states s ON s.epoch = n.epoch
    LEFT JOIN chain c ON c.epoch = n.epoch
    LEFT JOIN epoch_positions ep ON ep.epoch = n.epoch
    LEFT JOIN positions np ON np.epoch = n.epoch
    LEFT JOIN withdrawals nw ON nw.epoch = n.epoch
    WHERE n.epoch = ANY(epochs)
$$;
