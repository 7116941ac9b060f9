-- Nominator positions (issue 14): what each nominator holds with each operator, exact, over
-- epochs. Read by the backfill from the storage dumps' `deposits`, `withdrawals` and
-- `depositOnHold` items (shareprice.chain.nominators), in the same batch transaction as prices.
--
-- Why intervals and not a row per position per epoch: every dump repeats every position, so a
-- row per (operator, account, epoch) grows with epochs x nominators (350 M rows at seed scale
-- with ~100 nominators per operator) while positions change in a few epochs each. Here a row is
-- written at epoch E only when the position's state at E differs from its state at E-1 (the
-- backfill reads E-1's items for the first epoch of a batch), including the epoch in which a
-- pending deposit converts (its effective shares change although the raw fields do not).
--
-- Reading a position's state at epoch X (the rule every reader follows, see
-- positions_segment_start below):
--   1. X must have a row in epoch_positions (its document carried the items); otherwise the
--      positions at X are unknown: a hole, never "no positions".
--   2. S = positions_segment_start(X): the latest epoch <= X written against no previous epoch
--      (base_revision IS NULL: every position of that epoch has a row, "full rows").
--   3. The state is the row with the largest from_epoch in [S, X] for (operator, account); a row
--      whose state columns are all NULL (a "closing" row) or no such row means no position.
-- So to_epoch is not stored: it is the next row's from_epoch - 1, cut at the next full-rows
-- epoch; storing it would mean rewriting earlier rows whenever a later epoch is (re)normalized.
--
-- Revisions: epoch_positions.base_revision is the epochs.revision of E-1 whose items the rows
-- of E were compared with (NULL: compared with nothing, full rows). E must be normalized again
-- when that base is no longer what the tables hold for E-1 (E-1 renormalized from a new
-- revision, imported after E, or failed): the backfill's pending query says so.
--
-- operator_id leads every key, as in the other normalized tables.

-- One row per account seen, with its SS58 form (prefix 6094), so a lookup by address is an
-- index probe and pages never re-encode.
CREATE TABLE nominator_accounts (
    account  BYTEA PRIMARY KEY CHECK (octet_length(account) = 32),
    ss58     TEXT NOT NULL UNIQUE
);

-- Per normalized epoch whose document carried the position items.
CREATE TABLE epoch_positions (
    epoch               INTEGER PRIMARY KEY,
    -- epochs.revision of epoch - 1 whose positions the rows of this epoch are changes from;
    -- NULL: this epoch has a row for every position it holds (full rows, a segment start).
    base_revision       BIGINT,
    -- headDomainNumber of the dump: what unlock blocks are compared with (NULL when absent).
    head_domain_number  BIGINT,
    -- Positions (deposit or hold entries) and withdrawal entries the document holds.
    positions           INTEGER NOT NULL CHECK (positions >= 0),
    withdrawals         INTEGER NOT NULL CHECK (withdrawals >= 0)
);

-- A deposit's state (and the principal on hold for it) from from_epoch on. Every state column
-- NULL: the position no longer exists from from_epoch on (a closing row).
CREATE TABLE nominator_positions (
    operator_id          BIGINT NOT NULL,
    account              BYTEA NOT NULL,
    from_epoch           INTEGER NOT NULL,
    -- Deposits entry: known.shares, known.storageFeeDeposit (NULL: no Deposits entry).
    known_shares         NUMERIC(40,0),
    known_storage_fee    NUMERIC(40,0),
    -- Its pending deposit (all NULL: none): effectiveDomainEpoch, amount, storageFeeDeposit.
    pending_domain_id    INTEGER,
    pending_epoch        INTEGER,
    pending_amount       NUMERIC(40,0),
    pending_storage_fee  NUMERIC(40,0),
    -- known + floor(P * pending amount / 10^18) once the pending epoch has ended (P: the chain's
    -- shares-per-stake price of that epoch); NULL when that price is missing (a hole) or when
    -- there is no Deposits entry.
    effective_shares     NUMERIC(40,0),
    -- DepositOnHold: the principal still held (NULL: no entry).
    deposit_on_hold      NUMERIC(40,0),
    PRIMARY KEY (operator_id, account, from_epoch)
);
-- One nominator's positions over all operators and epochs (the Nominators page, the API).
CREATE INDEX nominator_positions_account ON nominator_positions (account, operator_id, from_epoch);
-- Replacing the rows of re-normalized epochs.
CREATE INDEX nominator_positions_epoch ON nominator_positions USING brin (from_epoch);

-- A Withdrawals entry's state from from_epoch on; every state column NULL: closing row.
CREATE TABLE nominator_withdrawals (
    operator_id                   BIGINT NOT NULL,
    account                       BYTEA NOT NULL,
    from_epoch                    INTEGER NOT NULL,
    total_amount                  NUMERIC(40,0),
    total_storage_fee             NUMERIC(40,0),
    -- withdrawalInShares (all NULL: none): its epoch, unlock block, shares, storage fee refund.
    in_shares_domain_id           INTEGER,
    in_shares_epoch               INTEGER,
    in_shares_unlock_block        BIGINT,
    in_shares                     NUMERIC(40,0),
    in_shares_storage_fee_refund  NUMERIC(40,0),
    -- The unlocking `withdrawals` list, in chain order:
    -- [{"unlock_block": n, "amount": "<Shannons>", "storage_fee_refund": "<Shannons>"}]
    -- (amounts as decimal strings: exact beyond 2^53). NULL on a closing row.
    unlocking                     JSONB,
    PRIMARY KEY (operator_id, account, from_epoch)
);
CREATE INDEX nominator_withdrawals_account
    ON nominator_withdrawals (account, operator_id, from_epoch);
CREATE INDEX nominator_withdrawals_epoch ON nominator_withdrawals USING brin (from_epoch);

-- Step 2 of the reading rule: the latest full-rows epoch at or before x (NULL: none).
CREATE FUNCTION positions_segment_start(x integer) RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT max(p.epoch) FROM epoch_positions AS p
    WHERE p.epoch <= x AND p.base_revision IS NULL
$$;
