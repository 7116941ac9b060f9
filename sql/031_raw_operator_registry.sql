-- Read the operator registry straight from a raw document, inside PostgreSQL, independently of
-- the Python parser: the integrity checks compare the normalized tables against it without
-- shipping megabytes of JSON to the client. Same rules as DOMAIN.md and shareprice/parser.py.

-- A little-endian u64 as written in storage keys (16 hex digits) to bigint.
-- '0100000000000000' -> 1. Ids up to 2^63-1 (the column type of operator_id).
CREATE FUNCTION storage_key_u64_le(hex text) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ('x' || substr(hex, 15, 2) || substr(hex, 13, 2) || substr(hex, 11, 2)
                || substr(hex, 9, 2) || substr(hex, 7, 2) || substr(hex, 5, 2)
                || substr(hex, 3, 2) || substr(hex, 1, 2))::bit(64)::bigint
$$;

-- Whether a u128 as polkadot.js writes it (0x hex, often zero-padded, or a JSON number) is zero.
CREATE FUNCTION json_u128_is_zero(value jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(value)
               WHEN 'number' THEN value::numeric = 0
               WHEN 'string' THEN ltrim(substr(value #>> '{}', 3), '0') = ''
               ELSE false
           END
$$;

-- Every operator id one raw document registers, and whether it has a price in that epoch.
--
-- Format A (storage dump): ids decoded from the Operators storage keys (0x + 32 hex pallet +
-- 32 hex item + u64 LE id), never from the entries' array positions (the old system's
-- phantom-operator bug). An operator with zero stake and zero shares has no price (registered
-- this epoch or fully withdrawn).
-- Format B (flat export): keys of operatorStakes are priced; operatorSharePrices keys without a
-- stake are registered but unpriced.
-- 'lax' paths unwrap a one-element list, so both `{...}` and `[{...}]` documents work.
CREATE FUNCTION raw_operator_registry(doc jsonb)
RETURNS TABLE (operator_id bigint, priced boolean)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT storage_key_u64_le(substr(entry.v, 67, 16)),
           NOT (json_u128_is_zero(payload.p -> 'currentTotalStake')
                AND json_u128_is_zero(payload.p -> 'currentTotalShares'))
    FROM jsonb_path_query(doc, 'lax $.operators.entries[*].value') AS item(j)
    CROSS JOIN LATERAL (SELECT item.j #>> '{}' AS v) AS entry
    CROSS JOIN LATERAL (SELECT substr(entry.v, strpos(entry.v, ',') + 1)::jsonb AS p) AS payload
    WHERE left(entry.v, 66) = '0x0b41d0c7f7b4485bd7be1d66066b00ad34a0a3fbf14e6c92456ca7bd91d59a57'
    UNION ALL
    SELECT flat.id::bigint, bool_or(flat.staked)
    FROM (
        SELECT s.key AS id, true AS staked
        FROM jsonb_path_query(doc, 'lax $.operatorStakes') AS m(obj)
        CROSS JOIN LATERAL jsonb_each(m.obj) AS s
        UNION ALL
        SELECT p.key, false
        FROM jsonb_path_query(doc, 'lax $.operatorSharePrices') AS m(obj)
        CROSS JOIN LATERAL jsonb_each(m.obj) AS p
    ) AS flat
    GROUP BY flat.id
$$;
