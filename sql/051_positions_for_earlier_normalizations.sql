-- Epochs normalized before the backfill read nominator positions (sql/042) have prices but no
-- epoch_positions row, and nothing in the backfill's pending rule would ever revisit them: an
-- upgraded database would show positions only for epochs written after the upgrade.
--
-- Mark exactly those whose document carries the Deposits item (storage dumps from the indexer;
-- flat exports and dumps without the item have no positions to read) as normalized from
-- revision -1, a revision no document has: the next `shareprice backfill` sees the revision
-- moved on and re-normalizes them (old rows replaced in the batch's transaction, as for any
-- changed document). Nothing is deleted here and the raw documents are only read.
--
-- Cost: one `?` per stored document (reads each once: ~1 min at seed scale), only when the
-- migration runs; nothing on a database without such epochs.
UPDATE epoch_normalizations AS n
SET revision = -1
FROM epochs AS e
WHERE e.epoch = n.epoch
  AND NOT EXISTS (SELECT 1 FROM epoch_positions AS p WHERE p.epoch = n.epoch)
  AND jsonb_typeof(e.data) = 'object'
  AND e.data ? 'deposits';
