"""A fuzzed corpus through import and backfill: every valid document arrives, nothing is lost.

The real flat export (220 epochs) is written as NDJSON with a seeded third of its documents
mutated like the parser fuzz tests do (the epoch number left intact so each document keeps its
identity). Import must store exactly the documents the parser accepts and name every other;
backfill must then normalize every stored epoch, with the parser's exact prices.
"""

from __future__ import annotations

import json
import random

from helpers.database import TEMPLATE_DB, drop_database, new_database
from test_fuzz_parsers import _mutate, _paths

from shareprice import backfill
from shareprice.chain.parser import ParseError, parse_document
from shareprice.ingest import importer
from shareprice.store import db

MUTATIONS = ["drop", "junk", "truncate", "nest", "non_ascii", "huge", "negative"]
JUNK = [None, "0xzz", -5, 10**41, "١٢٣", {"a": [1]}, [], "", 1.5]


def _fuzzed_corpus(flat: list[dict], seed: int) -> list[dict]:
    rng = random.Random(seed)
    corpus = []
    for doc in flat:
        if rng.random() < 1 / 3:
            paths = [p for p in _paths(doc)[1:] if p[0] != "epoch"]
            doc = _mutate(
                doc, rng.choice(paths), rng.choice(MUTATIONS), rng.choice(JUNK), rng.randrange(99)
            )
        corpus.append(doc)
    return corpus


def test_fuzzed_corpus_import_and_backfill_lose_nothing_valid(
    shared_data, pg_admin_url, template_url, tmp_path
):
    flat = json.loads((shared_data / "flat-export-220-epochs.json").read_text())
    corpus = _fuzzed_corpus(flat, seed=2026)
    expected: dict[int, dict[int, int]] = {}
    invalid = 0
    for doc in corpus:
        try:
            record = parse_document(doc)
        except ParseError:
            invalid += 1
            continue
        expected[record.epoch] = {op.operator_id: op.share_price_perq for op in record.operators}
    assert invalid > 10 and len(expected) > 100, "the corpus must hold both kinds"

    path = tmp_path / "corpus.ndjson"
    path.write_text("".join(json.dumps(doc) + "\n" for doc in corpus))
    url = new_database(pg_admin_url, TEMPLATE_DB)
    try:
        engine = db.get_engine(url)
        summary = importer.import_paths(engine, [path])
        assert summary.inserted == len(expected)
        assert len(summary.invalid) == invalid
        assert all("epoch" in reason for _, reason in summary.invalid)

        result = backfill.run_backfill(engine, backfill.Options(workers=1))
        assert result.epochs_failed == 0
        with engine.connect() as conn:
            stored = conn.exec_driver_sql(
                "SELECT epoch, operator_id, share_price_perq FROM operator_share_prices"
            ).all()
            normalized = {
                e for (e,) in conn.exec_driver_sql("SELECT epoch FROM epoch_normalizations")
            }
        got: dict[int, dict[int, int]] = {}
        for epoch, operator, price in stored:
            got.setdefault(epoch, {})[operator] = int(price)
        assert normalized == set(expected)
        assert got == {e: ops for e, ops in expected.items() if ops}
    finally:
        drop_database(pg_admin_url, url)
