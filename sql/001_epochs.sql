-- Raw per-epoch documents exactly as the indexer (Format A) or the flat export (Format B) wrote
-- them. Normalization only reads this table; nothing in shareprice ever updates `data`.
CREATE TABLE epochs (
    epoch        INTEGER PRIMARY KEY CHECK (epoch >= 0),
    end_block    BIGINT,
    end_hash     TEXT,
    indexed_at   TIMESTAMPTZ,
    data         JSONB NOT NULL,
    inserted_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Bumped from a sequence whenever `data` is inserted or changes. The backfill stores the
    -- revision it normalized, so "which epochs changed since" is an integer compare instead of
    -- re-hashing gigabytes of JSON on every incremental run.
    revision     BIGINT NOT NULL DEFAULT 0
);

CREATE SEQUENCE epochs_revision_seq;

CREATE FUNCTION epochs_bump_revision() RETURNS trigger
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

CREATE TRIGGER epochs_revision
    BEFORE INSERT OR UPDATE ON epochs
    FOR EACH ROW EXECUTE FUNCTION epochs_bump_revision();

-- One notification per statement (not per row: a COPY of 3,734 epochs would queue 3,734), so
-- `shareprice backfill --follow` wakes up at once and then asks the table what is pending.
CREATE FUNCTION epochs_notify_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('epochs_changed', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER epochs_changed
    AFTER INSERT OR UPDATE ON epochs
    FOR EACH STATEMENT EXECUTE FUNCTION epochs_notify_changed();
