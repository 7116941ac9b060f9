-- Raw per-epoch documents exactly as the indexer (Format A) or the flat export (Format B) wrote
-- them. Normalization only reads this table; nothing in shareprice ever updates `data`.
--
-- This migration also ADOPTS a database of the old system: its `epochs (epoch, data)` table is
-- kept in place (columns added, `data` untouched), and tables it created under the names our
-- later migrations use are renamed with a `_legacy` suffix (with their indexes, whose names
-- would collide), never dropped.

DO $adopt$
DECLARE
    legacy TEXT;
    idx RECORD;
BEGIN
    -- schema_migrations is empty exactly when no shareprice migration ran here before: any table
    -- with one of our names was then made by the old system.
    IF EXISTS (SELECT 1 FROM schema_migrations) THEN
        RETURN;
    END IF;
    FOREACH legacy IN ARRAY ARRAY['operator_share_prices', 'operator_shares',
                                  'operator_chain_share_prices', 'operators_metadata',
                                  'backfill_runs', 'backfill_errors'] LOOP
        IF to_regclass(format('public.%I', legacy)) IS NOT NULL THEN
            FOR idx IN SELECT indexname FROM pg_indexes
                       WHERE schemaname = 'public' AND tablename = legacy LOOP
                EXECUTE format('ALTER INDEX public.%I RENAME TO %I',
                               idx.indexname, left(idx.indexname, 55) || '_legacy');
            END LOOP;
            EXECUTE format('ALTER TABLE public.%I RENAME TO %I', legacy, legacy || '_legacy');
            RAISE NOTICE 'old system''s table % renamed to %_legacy', legacy, legacy;
        END IF;
    END LOOP;
    IF to_regclass('public.comprehensive_analytics') IS NOT NULL THEN
        EXECUTE 'ALTER VIEW public.comprehensive_analytics RENAME TO comprehensive_analytics_legacy';
    END IF;
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = 'public' AND table_name = 'epochs' AND column_name = 'data'
                 AND data_type <> 'jsonb') THEN
        RAISE EXCEPTION 'epochs.data is not jsonb: shareprice reads jsonb and never rewrites raw '
                        'data; convert it yourself (ALTER TABLE epochs ALTER data TYPE jsonb '
                        'USING data::jsonb) if that is acceptable, then migrate again';
    END IF;
END
$adopt$;

CREATE TABLE IF NOT EXISTS epochs (
    epoch        INTEGER PRIMARY KEY CHECK (epoch >= 0),
    data         JSONB NOT NULL
);
ALTER TABLE epochs
    ADD COLUMN IF NOT EXISTS end_block    BIGINT,
    ADD COLUMN IF NOT EXISTS end_hash     TEXT,
    ADD COLUMN IF NOT EXISTS indexed_at   TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS inserted_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Bumped from a sequence whenever `data` is inserted or changes. The backfill stores the
    -- revision it normalized, so "which epochs changed since" is an integer compare instead of
    -- re-hashing gigabytes of JSON on every incremental run.
    ADD COLUMN IF NOT EXISTS revision     BIGINT NOT NULL DEFAULT 0;

-- Adopted rows: the indexer's block number, hash and run time, read from the documents (Format A
-- and B name them alike). Only these new columns are written; `data` is not touched.
UPDATE epochs
   SET end_block  = CASE WHEN jsonb_typeof(data->'endBlock') = 'number'
                         THEN (data->>'endBlock')::numeric::bigint END,
       end_hash   = CASE WHEN jsonb_typeof(data->'endHash') = 'string' THEN data->>'endHash' END,
       indexed_at = CASE WHEN jsonb_typeof(data->'timestamp') = 'number'
                         THEN to_timestamp((data->>'timestamp')::numeric / 1000) END
 WHERE end_block IS NULL AND end_hash IS NULL AND indexed_at IS NULL
   AND jsonb_typeof(data) = 'object';

CREATE SEQUENCE IF NOT EXISTS epochs_revision_seq;

CREATE OR REPLACE FUNCTION epochs_bump_revision() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.data IS DISTINCT FROM OLD.data THEN
        NEW.revision := nextval('epochs_revision_seq');
    ELSE
        NEW.revision := OLD.revision;
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE TRIGGER epochs_revision
    BEFORE INSERT OR UPDATE ON epochs
    FOR EACH ROW EXECUTE FUNCTION epochs_bump_revision();

-- One notification per statement (not per row: a COPY of 3,734 epochs would queue 3,734), so
-- `shareprice backfill --follow` wakes up at once and then asks the table what is pending.
CREATE OR REPLACE FUNCTION epochs_notify_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('epochs_changed', '');
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER epochs_changed
    AFTER INSERT OR UPDATE ON epochs
    FOR EACH STATEMENT EXECUTE FUNCTION epochs_notify_changed();
