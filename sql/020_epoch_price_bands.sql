-- The explorer's "all operators" overview: per epoch, the 5/25/50/75/95th percentile of every
-- operator's share price, kept next to the data instead of recomputed on every view.
--
-- Why stored: computing it live sorts all ~3.5 M (operator, epoch) prices by epoch and then each
-- epoch's ~940 prices, 0.7-1.1 s at seed scale on this machine, and every backfill batch moves the
-- data version, so a live band would be recomputed on every dashboard rerun while a backfill
-- runs. Stored, a view reads 3,734 small rows.
--
-- How it stays right: the backfill writes each batch's prices with one COPY holding every
-- operator of each epoch in the batch (after deleting the old rows of re-normalized epochs). A
-- statement trigger computes those epochs' bands from the COPY's transition table, so keeping
-- the band reads nothing from the 3.5 M-row table (~20-40 ms per batch of 50 epochs). Deleting
-- or changing prices drops or recomputes the affected epochs' bands. Readers still verify:
-- queries.band_v2 only uses a stored row whose `operators` equals the epoch's operator_count in
-- epoch_normalizations, and computes any other epoch live, so a band can be slow but never stale
-- (an epoch whose rows arrived in two statements, for instance, is simply computed live).
--
-- Values are exact: percentile_disc returns one of the prices, never an interpolation.
CREATE TABLE epoch_price_bands (
    epoch        INTEGER PRIMARY KEY,
    operators    INTEGER NOT NULL CHECK (operators > 0),
    p05          NUMERIC(40,0) NOT NULL,
    p25          NUMERIC(40,0) NOT NULL,
    p50          NUMERIC(40,0) NOT NULL,
    p75          NUMERIC(40,0) NOT NULL,
    p95          NUMERIC(40,0) NOT NULL,
    refreshed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Recompute the band of the given epochs from operator_share_prices (an epoch without prices
-- loses its row). The BETWEEN lets the BRIN index on epoch prune the scan to the batch's range.
CREATE FUNCTION epoch_price_bands_refresh(epochs integer[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lo integer;
    hi integer;
BEGIN
    SELECT min(e), max(e) INTO lo, hi FROM unnest(epochs) AS e;
    IF lo IS NULL THEN
        RETURN;
    END IF;
    DELETE FROM epoch_price_bands WHERE epoch = ANY(epochs);
    INSERT INTO epoch_price_bands (epoch, operators, p05, p25, p50, p75, p95)
    SELECT epoch, n, q[1], q[2], q[3], q[4], q[5]
    FROM (
        SELECT p.epoch, count(*) AS n,
               percentile_disc(ARRAY[0.05, 0.25, 0.5, 0.75, 0.95]::float8[])
                   WITHIN GROUP (ORDER BY p.share_price_perq) AS q
        FROM operator_share_prices p
        WHERE p.epoch BETWEEN lo AND hi AND p.epoch = ANY(epochs)
        GROUP BY p.epoch
    ) AS per_epoch;
END;
$$;

-- New prices: the bands of the epochs in the statement, from the statement's own rows.
CREATE FUNCTION epoch_price_bands_on_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO epoch_price_bands (epoch, operators, p05, p25, p50, p75, p95)
    SELECT epoch, n, q[1], q[2], q[3], q[4], q[5]
    FROM (
        SELECT epoch, count(*) AS n,
               percentile_disc(ARRAY[0.05, 0.25, 0.5, 0.75, 0.95]::float8[])
                   WITHIN GROUP (ORDER BY share_price_perq) AS q
        FROM new_prices
        GROUP BY epoch
    ) AS per_epoch
    ON CONFLICT (epoch) DO UPDATE
    SET operators = EXCLUDED.operators, p05 = EXCLUDED.p05, p25 = EXCLUDED.p25,
        p50 = EXCLUDED.p50, p75 = EXCLUDED.p75, p95 = EXCLUDED.p95, refreshed_at = now();
    RETURN NULL;
END;
$$;

-- Deleted prices: those epochs' bands are gone (re-normalized epochs get theirs back from the
-- insert that follows).
CREATE FUNCTION epoch_price_bands_on_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM epoch_price_bands WHERE epoch IN (SELECT DISTINCT epoch FROM old_prices);
    RETURN NULL;
END;
$$;

-- Changed prices (not something the backfill does): recompute those epochs from the table.
CREATE FUNCTION epoch_price_bands_on_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM epoch_price_bands_refresh(
        ARRAY(SELECT epoch FROM old_prices UNION SELECT epoch FROM new_prices)
    );
    RETURN NULL;
END;
$$;

CREATE FUNCTION epoch_price_bands_on_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM epoch_price_bands;  -- DELETE: needs no TRUNCATE privilege
    RETURN NULL;
END;
$$;

CREATE TRIGGER epoch_price_bands_insert
    AFTER INSERT ON operator_share_prices
    REFERENCING NEW TABLE AS new_prices
    FOR EACH STATEMENT EXECUTE FUNCTION epoch_price_bands_on_insert();

CREATE TRIGGER epoch_price_bands_delete
    AFTER DELETE ON operator_share_prices
    REFERENCING OLD TABLE AS old_prices
    FOR EACH STATEMENT EXECUTE FUNCTION epoch_price_bands_on_delete();

CREATE TRIGGER epoch_price_bands_update
    AFTER UPDATE ON operator_share_prices
    REFERENCING OLD TABLE AS old_prices NEW TABLE AS new_prices
    FOR EACH STATEMENT EXECUTE FUNCTION epoch_price_bands_on_update();

CREATE TRIGGER epoch_price_bands_truncate
    AFTER TRUNCATE ON operator_share_prices
    FOR EACH STATEMENT EXECUTE FUNCTION epoch_price_bands_on_truncate();

-- Data normalized before this migration.
SELECT epoch_price_bands_refresh(ARRAY(SELECT DISTINCT epoch FROM operator_share_prices));
