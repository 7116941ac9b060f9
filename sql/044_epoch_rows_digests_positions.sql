-- epoch_rows_digests() (sql/041) over everything the per-epoch checks judge, not only prices and
-- operator states: also the chain's recorded prices (operator_chain_share_prices, by the domain
-- epoch they were recorded for), and the nominator tables (sql/042: epoch_positions, and the
-- nominator_positions / nominator_withdrawals change rows, by from_epoch).
--
-- Why: `shareprice check` re-judges an epoch only when its digest moved since it was last
-- verified; the checks over chain prices and positions became per-epoch too (issue 13 item 3,
-- issue 14 item 5), so a value planted in those tables after a verification must move the
-- digest of the epoch it belongs to, or the next incremental run would never look at it.
-- A position's state at epoch X is the latest change row at or before X (sql/042), so a planted
-- row moves the digest of its from_epoch, the first epoch whose state it changes; the checks
-- take that epoch and the next one.
--
-- Same technique and caveats as 041 (xor of 64-bit row hashes, seeded with the epoch, with row
-- counts): a change detector against mistakes and stray writes, not a MAC. Accounts are
-- rendered as hex so every row's text names its (operator, account) key and no two rows of an
-- epoch can cancel. The digest text of every epoch changes with this migration, so the first
-- incremental run after it re-reads every epoch once.
CREATE OR REPLACE FUNCTION epoch_rows_digests()
RETURNS TABLE (epoch integer, revision bigint, rows_digest text)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH prices AS (
        SELECT p.epoch, count(*) AS n,
               bit_xor(hashtextextended(
                   format('%s|%s|%s', p.operator_id, p.share_price_perq, p.source),
                   p.epoch)) AS h
        FROM operator_share_prices p
        GROUP BY p.epoch
    ), states AS (
        SELECT s.epoch, count(*) AS n,
               bit_xor(hashtextextended(
                   format('%s|%s|%s|%s|%s|%s|%s', s.operator_id, s.stake_raw, s.shares_raw,
                          s.storage_fee_raw, s.rewards_raw, s.status, s.nomination_tax),
                   s.epoch)) AS h
        FROM operator_shares s
        GROUP BY s.epoch
    ), chain AS (
        SELECT c.domain_epoch AS epoch, count(*) AS n,
               bit_xor(hashtextextended(
                   format('%s|%s|%s|%s', c.operator_id, c.domain_id, c.shares_per_stake_perq,
                          c.seen_in_epoch),
                   c.domain_epoch)) AS h
        FROM operator_chain_share_prices c
        GROUP BY c.domain_epoch
    ), positions AS (
        SELECT p.from_epoch AS epoch, count(*) AS n,
               bit_xor(hashtextextended(
                   format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', p.operator_id,
                          encode(p.account, 'hex'), p.known_shares, p.known_storage_fee,
                          p.pending_domain_id, p.pending_epoch, p.pending_amount,
                          p.pending_storage_fee, p.effective_shares, p.deposit_on_hold),
                   p.from_epoch)) AS h
        FROM nominator_positions p
        GROUP BY p.from_epoch
    ), withdrawals AS (
        SELECT w.from_epoch AS epoch, count(*) AS n,
               bit_xor(hashtextextended(
                   format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', w.operator_id,
                          encode(w.account, 'hex'), w.total_amount, w.total_storage_fee,
                          w.in_shares_domain_id, w.in_shares_epoch, w.in_shares_unlock_block,
                          w.in_shares, w.in_shares_storage_fee_refund, w.unlocking::text),
                   w.from_epoch)) AS h
        FROM nominator_withdrawals w
        GROUP BY w.from_epoch
    )
    SELECT n.epoch, e.revision,
           format('%s|%s|%s:%s|%s:%s|c%s:%s|p%s|%s|%s|%s:%s|%s:%s',
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
$$;
