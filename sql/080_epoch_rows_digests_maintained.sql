-- epoch_rows_digests() (sql/041, 044, 060) read from per-statement deltas that triggers keep as
-- rows are written, instead of hashing all ~10.6 M normalized rows at seed scale on every call.
--
-- Why: every incremental `shareprice check` starts by computing every epoch's digest to find
-- the epochs that changed since they were last verified. Recomputed, that is ~2.8 s of server
-- time at seed scale however few epochs changed: most of an incremental run (issue 13 asks for
-- under 5 s). The digest is an xor of per-row hashes with a row count, so it can be kept up to
-- date: a statement that inserts rows xors their hashes in and adds their count, a DELETE xors
-- the same hashes out (x # h # h = x) and subtracts, an UPDATE does both. The digest text is
-- exactly sql/060's (same row hashes, same 'r2|' format), so epochs verified before this
-- migration stay verified.
--
-- Deltas, not a row per epoch updated in place: each statement INSERTs its own (epoch, part)
-- rows and never waits for another transaction's lock. Backfill workers write the chain price
-- history's rows of the same domain epochs at the same time (every dump repeats it); an
-- in-place upsert would make them wait on each other and could deadlock with their other
-- writes. The reader sums a few rows per epoch (~19 k delta rows after a seed-scale backfill,
-- a few ms); epoch_rows_digest_rebuild() folds them into one row per (epoch, part).
--
-- What this trusts: that writes go through the triggers. A session that disables triggers
-- (session_replication_role = replica, ALTER TABLE ... DISABLE TRIGGER) or a change below SQL
-- could leave a digest unchanged while rows changed; the `rows_digests_maintained` check
-- (shareprice/checks/digest_checks.py) recomputes every digest from the rows
-- (epoch_rows_digests_recomputed(), sql/060's body) and fails on any difference, in every
-- --full and --sample run.

-- One row's hash, per table: the columns sql/060 hashed, seeded with the row's epoch. One
-- definition shared by the triggers and the recomputation, so the two cannot drift.
CREATE FUNCTION rows_digest_hash(p operator_share_prices) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN hash_record_extended(ROW(p.operator_id, p.share_price_perq, p.source), p.epoch);

CREATE FUNCTION rows_digest_hash(s operator_shares) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN hash_record_extended(
    ROW(s.operator_id, s.stake_raw, s.shares_raw, s.storage_fee_raw, s.rewards_raw, s.status,
        s.nomination_tax), s.epoch);

CREATE FUNCTION rows_digest_hash(c operator_chain_share_prices) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN hash_record_extended(
    ROW(c.operator_id, c.domain_id, c.shares_per_stake_perq, c.seen_in_epoch), c.domain_epoch);

CREATE FUNCTION rows_digest_hash(p nominator_positions) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN hash_record_extended(
    ROW(p.operator_id, p.account, p.known_shares, p.known_storage_fee, p.pending_domain_id,
        p.pending_epoch, p.pending_amount, p.pending_storage_fee, p.effective_shares,
        p.deposit_on_hold), p.from_epoch);

CREATE FUNCTION rows_digest_hash(w nominator_withdrawals) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN hash_record_extended(
    ROW(w.operator_id, w.account, w.total_amount, w.total_storage_fee, w.in_shares_domain_id,
        w.in_shares_epoch, w.in_shares_unlock_block, w.in_shares, w.in_shares_storage_fee_refund,
        w.unlocking), w.from_epoch);

-- Per statement and epoch: which table (part: p prices, s states, c chain prices, n nominator
-- positions, w withdrawals), the change in its row count and the xor of the hashes written
-- or removed. An epoch's digest part is sum(n) and bit_xor(h) over its rows.
CREATE TABLE epoch_rows_digest_deltas (
    epoch  INTEGER NOT NULL,
    part   "char" NOT NULL CHECK (part IN ('p', 's', 'c', 'n', 'w')),
    n      BIGINT NOT NULL,
    h      BIGINT NOT NULL
);
CREATE INDEX epoch_rows_digest_deltas_epoch ON epoch_rows_digest_deltas (epoch, part);

-- The statement trigger of all five tables: TG_ARGV[0] is the part, TG_ARGV[1] the column
-- that holds the row's epoch (both fixed by the CREATE TRIGGER statements below). Dynamic SQL
-- because the transition tables a statement may name depend on the event (an INSERT trigger
-- has no old_rows); the statement is planned per call, which is nothing beside the rows.
CREATE FUNCTION epoch_rows_digest_on_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM epoch_rows_digest_deltas WHERE part = TG_ARGV[0]::"char";
        RETURN NULL;
    END IF;
    -- A transition table's whole row is a bare record: cast to the table's row type to pick
    -- that table's rows_digest_hash.
    changed := CASE TG_OP
        WHEN 'INSERT' THEN
            format('SELECT r.%1$I AS epoch, 1 AS n, rows_digest_hash(r::%2$I.%3$I) AS h '
                   'FROM new_rows r', TG_ARGV[1], TG_TABLE_SCHEMA, TG_TABLE_NAME)
        WHEN 'DELETE' THEN
            format('SELECT r.%1$I AS epoch, -1 AS n, rows_digest_hash(r::%2$I.%3$I) AS h '
                   'FROM old_rows r', TG_ARGV[1], TG_TABLE_SCHEMA, TG_TABLE_NAME)
        ELSE
            format('SELECT r.%1$I AS epoch, -1 AS n, rows_digest_hash(r::%2$I.%3$I) AS h '
                   'FROM old_rows r UNION ALL '
                   'SELECT r.%1$I, 1, rows_digest_hash(r::%2$I.%3$I) FROM new_rows r',
                   TG_ARGV[1], TG_TABLE_SCHEMA, TG_TABLE_NAME)
    END;
    EXECUTE format(
        'INSERT INTO epoch_rows_digest_deltas (epoch, part, n, h) '
        'SELECT epoch, $1, sum(n), bit_xor(h) FROM (%s) d GROUP BY epoch', changed)
    USING TG_ARGV[0]::"char";
    RETURN NULL;
END;
$$;

-- Four triggers per table (a trigger with transition tables serves one event).
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT * FROM (VALUES
            ('operator_share_prices', 'p', 'epoch'),
            ('operator_shares', 's', 'epoch'),
            ('operator_chain_share_prices', 'c', 'domain_epoch'),
            ('nominator_positions', 'n', 'from_epoch'),
            ('nominator_withdrawals', 'w', 'from_epoch')
        ) AS v (tab, part, epoch_column)
    LOOP
        EXECUTE format(
            'CREATE TRIGGER %1$s AFTER INSERT ON %2$I REFERENCING NEW TABLE AS new_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION epoch_rows_digest_on_change(%3$L, %4$L)',
            t.tab || '_digest_inserted', t.tab, t.part, t.epoch_column);
        EXECUTE format(
            'CREATE TRIGGER %1$s AFTER DELETE ON %2$I REFERENCING OLD TABLE AS old_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION epoch_rows_digest_on_change(%3$L, %4$L)',
            t.tab || '_digest_deleted', t.tab, t.part, t.epoch_column);
        EXECUTE format(
            'CREATE TRIGGER %1$s AFTER UPDATE ON %2$I '
            'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION epoch_rows_digest_on_change(%3$L, %4$L)',
            t.tab || '_digest_updated', t.tab, t.part, t.epoch_column);
        EXECUTE format(
            'CREATE TRIGGER %1$s AFTER TRUNCATE ON %2$I '
            'FOR EACH STATEMENT EXECUTE FUNCTION epoch_rows_digest_on_change(%3$L, %4$L)',
            t.tab || '_digest_truncated', t.tab, t.part, t.epoch_column);
    END LOOP;
END;
$$;

-- Recomputes the deltas from the rows themselves, one row per (epoch, part): the repair after
-- a write that bypassed the triggers (the rows_digests_maintained check says when), and a way
-- to fold many deltas into few. Epochs whose rows were changed behind the triggers get a digest
-- that no longer matches their verification, so the next incremental run re-reads them. The
-- table is locked meanwhile so no statement's delta falls between the delete and the insert.
CREATE FUNCTION epoch_rows_digest_rebuild() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
BEGIN
    LOCK TABLE epoch_rows_digest_deltas IN EXCLUSIVE MODE;
    DELETE FROM epoch_rows_digest_deltas;
    INSERT INTO epoch_rows_digest_deltas (epoch, part, n, h)
    SELECT p.epoch, 'p', count(*), bit_xor(rows_digest_hash(p))
    FROM operator_share_prices p GROUP BY p.epoch
    UNION ALL
    SELECT s.epoch, 's', count(*), bit_xor(rows_digest_hash(s))
    FROM operator_shares s GROUP BY s.epoch
    UNION ALL
    SELECT c.domain_epoch, 'c', count(*), bit_xor(rows_digest_hash(c))
    FROM operator_chain_share_prices c GROUP BY c.domain_epoch
    UNION ALL
    SELECT p.from_epoch, 'n', count(*), bit_xor(rows_digest_hash(p))
    FROM nominator_positions p GROUP BY p.from_epoch
    UNION ALL
    SELECT w.from_epoch, 'w', count(*), bit_xor(rows_digest_hash(w))
    FROM nominator_withdrawals w GROUP BY w.from_epoch;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END;
$$;

-- The rows already written.
SELECT epoch_rows_digest_rebuild();

-- The digest text of sql/060 from its per-epoch parts (a part with no rows: count 0 and an
-- empty hash, as sql/060's LEFT JOIN rendered it).
CREATE FUNCTION epoch_rows_digest_text(
    n epoch_normalizations, ep epoch_positions,
    pn bigint, ph bigint, sn bigint, sh bigint, cn bigint, ch bigint,
    nn bigint, nh bigint, wn bigint, wh bigint
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN format('r2|%s|%s|%s:%s|%s:%s|c%s:%s|p%s|%s|%s|%s:%s|%s:%s',
              n.revision, n.operator_count,
              coalesce(pn, 0), CASE WHEN pn <> 0 THEN ph END,
              coalesce(sn, 0), CASE WHEN sn <> 0 THEN sh END,
              coalesce(cn, 0), CASE WHEN cn <> 0 THEN ch END,
              ep.base_revision, ep.head_domain_number, ep.positions, ep.withdrawals,
              coalesce(nn, 0), CASE WHEN nn <> 0 THEN nh END,
              coalesce(wn, 0), CASE WHEN wn <> 0 THEN wh END);

-- sql/060's computation from the rows themselves, kept to verify the maintained digests.
CREATE FUNCTION epoch_rows_digests_recomputed()
RETURNS TABLE (epoch integer, revision bigint, rows_digest text)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH prices AS (
        SELECT p.epoch, count(*) AS n, bit_xor(rows_digest_hash(p)) AS h
        FROM operator_share_prices p GROUP BY p.epoch
    ), states AS (
        SELECT s.epoch, count(*) AS n, bit_xor(rows_digest_hash(s)) AS h
        FROM operator_shares s GROUP BY s.epoch
    ), chain AS (
        SELECT c.domain_epoch AS epoch, count(*) AS n, bit_xor(rows_digest_hash(c)) AS h
        FROM operator_chain_share_prices c GROUP BY c.domain_epoch
    ), positions AS (
        SELECT p.from_epoch AS epoch, count(*) AS n, bit_xor(rows_digest_hash(p)) AS h
        FROM nominator_positions p GROUP BY p.from_epoch
    ), withdrawals AS (
        SELECT w.from_epoch AS epoch, count(*) AS n, bit_xor(rows_digest_hash(w)) AS h
        FROM nominator_withdrawals w GROUP BY w.from_epoch
    )
    SELECT en.epoch, e.revision,
           epoch_rows_digest_text(en, ep, p.n, p.h, s.n, s.h, c.n, c.h,
                                  np.n, np.h, nw.n, nw.h)
    FROM epoch_normalizations en
    JOIN epochs e ON e.epoch = en.epoch
    LEFT JOIN prices p ON p.epoch = en.epoch
    LEFT JOIN states s ON s.epoch = en.epoch
    LEFT JOIN chain c ON c.epoch = en.epoch
    LEFT JOIN epoch_positions ep ON ep.epoch = en.epoch
    LEFT JOIN positions np ON np.epoch = en.epoch
    LEFT JOIN withdrawals nw ON nw.epoch = en.epoch
$$;

-- Same signature and text as before; what `shareprice check` calls.
CREATE OR REPLACE FUNCTION epoch_rows_digests()
RETURNS TABLE (epoch integer, revision bigint, rows_digest text)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH parts AS (
        SELECT d.epoch,
               (sum(d.n) FILTER (WHERE d.part = 'p'))::bigint AS pn,
               bit_xor(d.h) FILTER (WHERE d.part = 'p') AS ph,
               (sum(d.n) FILTER (WHERE d.part = 's'))::bigint AS sn,
               bit_xor(d.h) FILTER (WHERE d.part = 's') AS sh,
               (sum(d.n) FILTER (WHERE d.part = 'c'))::bigint AS cn,
               bit_xor(d.h) FILTER (WHERE d.part = 'c') AS ch,
               (sum(d.n) FILTER (WHERE d.part = 'n'))::bigint AS nn,
               bit_xor(d.h) FILTER (WHERE d.part = 'n') AS nh,
               (sum(d.n) FILTER (WHERE d.part = 'w'))::bigint AS wn,
               bit_xor(d.h) FILTER (WHERE d.part = 'w') AS wh
        FROM epoch_rows_digest_deltas d
        GROUP BY d.epoch
    )
    SELECT en.epoch, e.revision,
           epoch_rows_digest_text(en, ep, d.pn, d.ph, d.sn, d.sh, d.cn, d.ch,
                                  d.nn, d.nh, d.wn, d.wh)
    FROM epoch_normalizations en
    JOIN epochs e ON e.epoch = en.epoch
    LEFT JOIN parts d ON d.epoch = en.epoch
    LEFT JOIN epoch_positions ep ON ep.epoch = en.epoch
$$;
