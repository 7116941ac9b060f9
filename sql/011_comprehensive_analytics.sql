-- comprehensive_analytics: one row per epoch (totals and the price spread across active
-- operators), in two definitions that must return the same columns and the same values:
--
--   comprehensive_analytics_v1  computed in SQL from the raw documents (epochs.data), the way the
--                               old system's /api/epochs did it: slow, but needs no backfill;
--   comprehensive_analytics_v2  computed from the normalized tables the backfill writes: fast.
--
-- The public name `comprehensive_analytics` is a thin view over one of them. This migration
-- installs it over v1 (the only one correct before a backfill ran); `shareprice views use-v2`
-- swaps it to v2 in one transaction, keeping the previous one as comprehensive_analytics_old,
-- and `shareprice views rollback` swaps back (shareprice/views.py). Which definition a view
-- stands for is recorded in its COMMENT, so the swap can refuse a state it does not expect.
--
-- Definitions shared by both (and by shareprice/parser.py, whose rules v1 re-implements):
--   operators      those with a price in the epoch's document (an operator with zero stake and
--                  zero shares has none and is not counted);
--   active         status 'registered', or status unknown (flat exports carry no status);
--   mean price     floor(sum of active prices / number of active operators), an exact integer;
--   totals         exact NUMERIC sums; NULL when no operator gives the value (e.g. shares and
--                  storage fees in flat exports, rewards absent from the summary).

-- 16 hex digits (a u64, big-endian) to numeric, unsigned.
CREATE FUNCTION sp_hex64_to_numeric(hex16 text) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN ('x' || hex16)::bit(64)::bigint::numeric
       + CASE WHEN get_bit(('x' || hex16)::bit(64), 0) = 1 THEN 18446744073709551616 ELSE 0 END;

-- '0x' + up to 32 significant hex digits (polkadot.js toJSON of a u128, often zero-padded) to
-- numeric; NULL when it is not such a string.
CREATE FUNCTION sp_hex_to_numeric(hex text) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE
    WHEN left(hex, 2) = '0x' AND length(ltrim(substr(hex, 3), '0')) <= 32 THEN
        sp_hex64_to_numeric(substr(lpad(ltrim(substr(hex, 3), '0'), 32, '0'), 1, 16))
            * 18446744073709551616
        + sp_hex64_to_numeric(substr(lpad(ltrim(substr(hex, 3), '0'), 32, '0'), 17, 16))
END;

-- A u128 as a JSON value: 0x hex string, or a plain JSON number for small values (often 0).
CREATE FUNCTION sp_json_u128(value jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE jsonb_typeof(value)
    WHEN 'number' THEN value::numeric
    WHEN 'string' THEN sp_hex_to_numeric(value #>> '{}')
END;

-- A little-endian u64 (16 hex digits, as in storage keys) to bigint: '0100000000000000' -> 1.
CREATE FUNCTION sp_le_u64(hex16 text) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN ('x' || substr(hex16, 15, 2) || substr(hex16, 13, 2) || substr(hex16, 11, 2)
            || substr(hex16, 9, 2) || substr(hex16, 7, 2) || substr(hex16, 5, 2)
            || substr(hex16, 3, 2) || substr(hex16, 1, 2))::bit(64)::bigint;

-- Every priced operator of one raw document, decoded in SQL by the parser's rules
-- (DOMAIN.md): Format A ids from the Operators storage keys (never the array positions),
-- u128 hex amounts, comma-grouped rewards keyed by operator id, the price
-- floor(stake * 1e18 / shares); Format B stakes, rewards and given prices.
CREATE FUNCTION sp_raw_operator_states(doc jsonb)
RETURNS TABLE (
    operator_id       bigint,
    stake             numeric,
    shares            numeric,
    storage_fee       numeric,
    rewards           numeric,
    status            text,
    nomination_tax    integer,
    share_price_perq  numeric
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH format AS (
        SELECT (doc ? 'operatorStakes' OR doc ? 'operatorSharePrices') AS flat
    ),
    dump_rewards AS (
        SELECT replace(r.key, ',', '')::bigint AS operator_id,
               replace(r.value #>> '{}', ',', '')::numeric AS rewards
        FROM jsonb_each(doc -> 'domainStakingSummary' -> 'currentEpochRewards') AS r
    ),
    dump_states AS (
        SELECT sp_le_u64(substr(entry.v, 67, 16)) AS operator_id,
               sp_json_u128(payload.p -> 'currentTotalStake') AS stake,
               sp_json_u128(payload.p -> 'currentTotalShares') AS shares,
               sp_json_u128(payload.p -> 'totalStorageFeeDeposit') AS storage_fee,
               CASE jsonb_typeof(payload.p -> 'partialStatus')
                   WHEN 'string' THEN payload.p ->> 'partialStatus'
                   ELSE (SELECT min(k) FROM jsonb_object_keys(payload.p -> 'partialStatus') AS k)
               END AS status,
               (payload.p ->> 'nominationTax')::integer AS nomination_tax
        FROM format, jsonb_array_elements(doc -> 'operators' -> 'entries') AS item(j)
        CROSS JOIN LATERAL (SELECT item.j ->> 'value' AS v) AS entry
        CROSS JOIN LATERAL (SELECT substr(entry.v, strpos(entry.v, ',') + 1)::jsonb AS p) AS payload
        WHERE NOT format.flat
    )
    SELECT s.operator_id, s.stake, s.shares, s.storage_fee, r.rewards, s.status,
           s.nomination_tax, div(s.stake * 1000000000000000000, s.shares)
    FROM dump_states AS s
    LEFT JOIN dump_rewards AS r USING (operator_id)
    WHERE NOT (s.stake = 0 AND s.shares = 0)
    UNION ALL
    SELECT st.key::bigint, (st.value #>> '{}')::numeric, NULL, NULL,
           (doc -> 'rewards' ->> st.key)::numeric, NULL, NULL,
           (doc -> 'operatorSharePrices' ->> st.key)::numeric
    FROM format, jsonb_each(doc -> 'operatorStakes') AS st
    WHERE format.flat
$$;

CREATE VIEW comprehensive_analytics_v1 AS
SELECT e.epoch,
       count(o.operator_id) AS operator_count,
       count(o.operator_id) FILTER (WHERE o.status IS NULL OR o.status = 'registered')
           AS active_operator_count,
       sum(o.stake) AS total_stake,
       sum(o.shares) AS total_shares,
       sum(o.storage_fee) AS total_storage_fee,
       sum(o.rewards) AS total_rewards,
       div(sum(o.share_price_perq) FILTER (WHERE o.status IS NULL OR o.status = 'registered'),
           NULLIF(count(o.operator_id) FILTER (WHERE o.status IS NULL OR o.status = 'registered'), 0))
           AS mean_share_price_perq,
       min(o.share_price_perq) FILTER (WHERE o.status IS NULL OR o.status = 'registered')
           AS min_share_price_perq,
       max(o.share_price_perq) FILTER (WHERE o.status IS NULL OR o.status = 'registered')
           AS max_share_price_perq
FROM epochs AS e
-- A document may be a one-element list holding the object (the real storage-dump sample is).
CROSS JOIN LATERAL (
    SELECT CASE WHEN jsonb_typeof(e.data) = 'array' THEN e.data -> 0 ELSE e.data END AS doc
) AS d
LEFT JOIN LATERAL sp_raw_operator_states(d.doc) AS o ON true
GROUP BY e.epoch;

COMMENT ON VIEW comprehensive_analytics_v1 IS
    'comprehensive_analytics v1: computed in SQL from the raw documents in epochs.data';

CREATE VIEW comprehensive_analytics_v2 AS
SELECT n.epoch,
       coalesce(a.operator_count, 0) AS operator_count,
       coalesce(a.active_operator_count, 0) AS active_operator_count,
       a.total_stake,
       a.total_shares,
       a.total_storage_fee,
       a.total_rewards,
       a.mean_share_price_perq,
       a.min_share_price_perq,
       a.max_share_price_perq
FROM epoch_normalizations AS n
LEFT JOIN (
    SELECT s.epoch,
           count(*) AS operator_count,
           count(*) FILTER (WHERE s.status IS NULL OR s.status = 'registered')
               AS active_operator_count,
           sum(s.stake_raw)::numeric AS total_stake,
           sum(s.shares_raw)::numeric AS total_shares,
           sum(s.storage_fee_raw)::numeric AS total_storage_fee,
           sum(s.rewards_raw)::numeric AS total_rewards,
           div(sum(p.share_price_perq) FILTER (WHERE s.status IS NULL OR s.status = 'registered'),
               NULLIF(count(*) FILTER (WHERE s.status IS NULL OR s.status = 'registered'), 0))
               AS mean_share_price_perq,
           (min(p.share_price_perq) FILTER (WHERE s.status IS NULL OR s.status = 'registered'))::numeric
               AS min_share_price_perq,
           (max(p.share_price_perq) FILTER (WHERE s.status IS NULL OR s.status = 'registered'))::numeric
               AS max_share_price_perq
    FROM operator_shares AS s
    JOIN operator_share_prices AS p ON p.operator_id = s.operator_id AND p.epoch = s.epoch
    GROUP BY s.epoch
) AS a ON a.epoch = n.epoch;

COMMENT ON VIEW comprehensive_analytics_v2 IS
    'comprehensive_analytics v2: computed from the normalized tables (operator_shares, operator_share_prices)';

-- The public name, over v1 to begin with (see the top of this file).
CREATE VIEW comprehensive_analytics AS SELECT * FROM comprehensive_analytics_v1;
COMMENT ON VIEW comprehensive_analytics IS 'shareprice:comprehensive_analytics_v1';
