-- Normalized share-price data, written only by `shareprice backfill`.
--
-- Keys: every table keys on (operator_id, epoch) with operator_id first. That order serves the
-- product's main access path, "the series of these operators over an epoch range", as one
-- B-tree range scan per operator, and keeps the distribution column operator_id in every key so
-- the tables can be distributed with Citus (distribution column operator_id) without a redesign.
--
-- Epoch-range scans across all operators ("last 100 epochs") are served by BRIN indexes on
-- epoch: the backfill appends in epoch order, so the heap is physically correlated with epoch and
-- a BRIN index of a few kilobytes prunes almost every block, where a second B-tree would cost
-- ~100 MB per table at seed scale and slow every backfill batch.
--
-- Values are exact: stake, shares and prices are NUMERIC(40,0) (u128 fits in 39 digits).

-- Stake per share at 1e18 scale ("perq"): floor(stake * 10^18 / shares).
CREATE TABLE operator_share_prices (
    operator_id       BIGINT  NOT NULL CHECK (operator_id >= 0),
    epoch             INTEGER NOT NULL CHECK (epoch >= 0),
    share_price_perq  NUMERIC(40,0) NOT NULL CHECK (share_price_perq > 0),
    -- Where the price came from: 'storage_dump' = computed from the operator's stake and shares
    -- in a Format A document; 'flat_export' = given by a Format B document.
    source            TEXT NOT NULL CHECK (source IN ('storage_dump', 'flat_export')),
    PRIMARY KEY (operator_id, epoch)
);
CREATE INDEX operator_share_prices_epoch_brin ON operator_share_prices USING brin (epoch);

-- The operator's stake state behind each price. shares/storage fee are NULL for Format B
-- documents, which do not carry them.
CREATE TABLE operator_shares (
    operator_id      BIGINT  NOT NULL CHECK (operator_id >= 0),
    epoch            INTEGER NOT NULL CHECK (epoch >= 0),
    stake_raw        NUMERIC(40,0) NOT NULL CHECK (stake_raw >= 0),
    shares_raw       NUMERIC(40,0) CHECK (shares_raw >= 0),
    storage_fee_raw  NUMERIC(40,0) CHECK (storage_fee_raw >= 0),
    -- Rewards of this epoch (domainStakingSummary.currentEpochRewards); NULL when not given.
    rewards_raw      NUMERIC(40,0) CHECK (rewards_raw >= 0),
    PRIMARY KEY (operator_id, epoch)
);
CREATE INDEX operator_shares_epoch_brin ON operator_shares USING brin (epoch);

-- What the chain itself recorded (operatorEpochSharePrice): SHARES PER STAKE at 1e18 scale, the
-- inverse of the price above. Kept in the chain's convention for cross-checking; never plotted as
-- "share price". floor(10^36 / shares_per_stake_perq) must agree with the computed price of the
-- following document's epoch within 1 unit.
CREATE TABLE operator_chain_share_prices (
    operator_id            BIGINT  NOT NULL CHECK (operator_id >= 0),
    domain_id              INTEGER NOT NULL CHECK (domain_id >= 0),
    domain_epoch           INTEGER NOT NULL CHECK (domain_epoch >= 0),
    shares_per_stake_perq  NUMERIC(40,0) NOT NULL CHECK (shares_per_stake_perq > 0),
    -- The first raw document (epochs.epoch) this entry was read from; dumps repeat history.
    seen_in_epoch          INTEGER NOT NULL,
    PRIMARY KEY (operator_id, domain_id, domain_epoch)
);

-- One row per operator ever seen. name and color get stable defaults on first sight and are
-- never touched by the backfill afterwards, so a name or colour a person sets is kept.
CREATE TABLE operators_metadata (
    operator_id       BIGINT PRIMARY KEY CHECK (operator_id >= 0),
    name              TEXT NOT NULL,
    color             TEXT NOT NULL CHECK (color ~ '^#[0-9a-f]{6}$'),
    status            TEXT,
    nomination_tax    SMALLINT CHECK (nomination_tax BETWEEN 0 AND 100),
    first_seen_epoch  INTEGER,
    last_seen_epoch   INTEGER CHECK (last_seen_epoch >= first_seen_epoch),
    is_active         BOOLEAN NOT NULL DEFAULT true,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A cheap "data version" for caches: every backfill batch (and metadata edit) takes nextval, so
-- reading last_value tells a dashboard whether anything it cached may be stale.
CREATE SEQUENCE data_version_seq;
