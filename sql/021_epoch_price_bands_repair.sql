-- Keep the stored band complete even when an epoch's prices arrive in more than one statement.
--
-- sql/020 computes each INSERT statement's epochs from that statement's own rows. The backfill
-- flushes its COPY between epochs, so each statement holds whole epochs; but if an epoch were
-- ever split (another writer, a future chunking change), its stored band would cover only the
-- last part. Readers would notice (operator count differs from the mark) and compute that epoch
-- live: right, but slow for every view. So when the backfill marks epochs as normalized (after
-- writing all their rows, in the same transaction), repair exactly the marked epochs whose
-- stored band does not match their operator count. Normally there are none and this costs one
-- primary-key lookup per marked epoch.

-- Only the epochs asked for: `= ANY` lets the BRIN index read just their block ranges (no
-- BETWEEN, which for a few far-apart epochs would read everything in between).
CREATE OR REPLACE FUNCTION epoch_price_bands_refresh(epochs integer[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(cardinality(epochs), 0) = 0 THEN
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
        WHERE p.epoch = ANY(epochs)
        GROUP BY p.epoch
    ) AS per_epoch;
END;
$$;

CREATE FUNCTION epoch_price_bands_on_marks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM epoch_price_bands_refresh(ARRAY(
        SELECT m.epoch
        FROM changed_marks m
        LEFT JOIN epoch_price_bands b ON b.epoch = m.epoch
        WHERE m.operator_count > 0 AND b.operators IS DISTINCT FROM m.operator_count
    ));
    RETURN NULL;
END;
$$;

-- INSERT ... ON CONFLICT DO UPDATE fires both, each with its own rows.
CREATE TRIGGER epoch_price_bands_marked
    AFTER INSERT ON epoch_normalizations
    REFERENCING NEW TABLE AS changed_marks
    FOR EACH STATEMENT EXECUTE FUNCTION epoch_price_bands_on_marks();

CREATE TRIGGER epoch_price_bands_remarked
    AFTER UPDATE ON epoch_normalizations
    REFERENCING NEW TABLE AS changed_marks
    FOR EACH STATEMENT EXECUTE FUNCTION epoch_price_bands_on_marks();

-- Repair what is already there.
SELECT epoch_price_bands_refresh(ARRAY(
    SELECT n.epoch
    FROM epoch_normalizations n
    LEFT JOIN epoch_price_bands b ON b.epoch = n.epoch
    WHERE n.operator_count > 0 AND b.operators IS DISTINCT FROM n.operator_count
));
