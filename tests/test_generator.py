"""The generator: deterministic, realistic Format A, and obeying the staking rules it simulates."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import orjson
import pytest
import sqlalchemy as sa

from shareprice.chain import codec
from shareprice.chain.parser import parse_document
from shareprice.chain.records import PERQ
from shareprice.ingest import generator


def _records(url):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT epoch, end_block, end_hash, indexed_at, data::text FROM epochs ORDER BY epoch"
            ).all()
    finally:
        engine.dispose()
    return rows


@pytest.fixture(scope="module")
def small_rows(raw_small_url):
    return _records(raw_small_url)


def test_same_seed_same_documents_other_seed_other_documents():
    first = [d.data for d in generator.iter_documents("small", seed=11, epochs=30)]
    again = [d.data for d in generator.iter_documents("small", seed=11, epochs=30)]
    other = [d.data for d in generator.iter_documents("small", seed=12, epochs=30)]
    assert first == again
    assert first != other


def test_raw_small_holds_what_the_generator_was_asked_for(small_rows, raw_small_summary):
    summary = raw_small_summary
    assert (summary.profile, summary.epochs, summary.operators) == ("small", 80, 12)
    assert [row[0] for row in small_rows] == list(range(80))
    records = [parse_document(row[4]) for row in small_rows]
    # Table columns agree with the documents, as the indexer writes them.
    for row, record in zip(small_rows, records, strict=True):
        assert (row[1], row[2]) == (record.end_block, record.end_hash)
        assert int(row[3].timestamp() * 1000) == record.indexed_at_ms
    assert all(b[1] > a[1] for a, b in zip(small_rows, small_rows[1:], strict=False))
    assert sum(len(r.operators) for r in records) == summary.operator_states
    seen: dict[int, list] = defaultdict(list)
    for record in records:
        for state in record.operators:
            seen[state.operator_id].append((record.epoch, state))
    assert sorted(seen) == list(range(12))
    for operator_id, series in seen.items():
        first_epoch, first = series[0]
        # Registered during epoch r: first price in the document of r + 1, exactly 1.0.
        assert first_epoch == summary.registered_at[operator_id] + 1
        assert first.share_price_perq == PERQ
        assert first.stake == first.shares
        assert 0 <= first.nomination_tax <= 20
        assert [e for e, _ in series] == list(range(first_epoch, first_epoch + len(series)))
    (slashed,) = summary.slashed
    assert [s.status for _, s in seen[slashed]][-1] == "slashed"
    assert [s.status for _, s in seen[slashed]].count("slashed") == 1
    (deregistered,) = summary.deregistered
    statuses = [s.status for _, s in seen[deregistered]]
    assert statuses[-3:] == ["deregistered"] * 3  # shown until unlock, then gone
    assert seen[deregistered][-1][0] < 79 and seen[slashed][-1][0] < 79


def test_prices_never_decrease_except_at_a_slash(small_rows):
    records = [parse_document(row[4]) for row in small_rows]
    records += [
        parse_document(d.data) for d in generator.iter_documents("demo", seed=5, epochs=400)
    ]
    last: dict[tuple[int, int], int] = {}
    drops = 0
    for index, record in enumerate(records):
        run = 0 if index < len(small_rows) else 1
        for state in record.operators:
            previous = last.get((run, state.operator_id))
            if previous is not None and state.share_price_perq < previous:
                assert state.status == "slashed", (record.epoch, state)
                drops += 1
            last[(run, state.operator_id)] = state.share_price_perq
    assert drops >= 2  # the slashes of both runs are visible drops
    # And prices do rise: rewards are real.
    assert max(last.values()) > PERQ


def test_deposits_and_withdrawals_leave_the_price_unchanged_within_one_unit():
    no_rewards = dataclasses.replace(
        generator.PROFILES["small"],
        growth_median=0.0,
        slash_fraction=0.0,
        deposit_probability=0.3,
        withdrawal_probability=0.2,
    )
    queued = 0
    prices = []
    for doc in generator.iter_documents(no_rewards, seed=3, epochs=60):
        data = orjson.loads(doc.data)
        queued += data["deposits"]["count"] + data["withdrawals"]["count"]
        prices += [s.share_price_perq for s in parse_document(data).operators]
    assert queued > 100
    assert prices and all(abs(p - PERQ) <= 1 for p in prices)


def test_chain_record_agrees_with_the_next_documents_price(small_rows):
    """operatorEpochSharePrice(E) is shares per stake after E's rewards, before E's deposits;
    the document of E + 1 shows the state after them. Inverting a floor and flooring again can
    differ by up to 1 + price^2 / 1e36 units, so 2 units is the honest bound here."""
    records = {r.epoch: r for r in (parse_document(row[4]) for row in small_rows)}
    checked = 0
    for record in records.values():
        for entry in record.chain_prices:
            assert entry.domain_id == 0
            following = records.get(entry.domain_epoch + 1)
            if following is None:
                continue
            state = {s.operator_id: s for s in following.operators}.get(entry.operator_id)
            if state is None or state.status == "slashed":
                continue
            inverted = 10**36 // entry.shares_per_stake_perq
            assert abs(inverted - state.share_price_perq) <= 2
            checked += 1
    assert checked > 50


def test_documents_look_like_the_real_dump(shared_data, small_rows):
    real = orjson.loads((shared_data / "storage-dump-epoch-2647.json").read_bytes())[0]
    doc = orjson.loads(small_rows[-1][4])
    assert set(doc) == set(real)
    real_payload = orjson.loads(real["operators"]["entries"][0]["value"].split(",", 1)[1])
    entries = doc["operators"]["entries"]
    payloads = [orjson.loads(e["value"].split(",", 1)[1]) for e in entries]
    assert all(list(p) == list(real_payload) for p in payloads)  # same fields, same order
    assert set(doc["domainStakingSummary"]) == set(real["domainStakingSummary"])
    # Storage order is by key bytes (little-endian ids), so positions are not ids.
    keys = [e["value"][:82] for e in entries]
    assert keys == sorted(keys)
    ids = [codec.decode_operator_key(k) for k in keys]
    positions = [int(e["key"][0]) for e in entries]
    assert positions == list(range(len(entries)))
    assert positions != ids  # operator 0 is gone by the last epoch: position 0 is another id
    big = [p["currentTotalStake"] for p in payloads if isinstance(p["currentTotalStake"], str)]
    assert big and all(len(v) == 34 and v.startswith("0x") for v in big)
    assert "," in doc["domainStakingSummary"]["currentTotalStake"]


def test_seed_scale_profile_is_the_old_systems_scale():
    profile = generator.PROFILES["seed-scale"]
    assert profile.epochs == 3734
    # ~940 operators active on average, measured on a prefix (most register early).
    docs = list(generator.iter_documents("seed-scale", seed=0, epochs=120))
    active = [d.operator_states for d in docs[60:]]
    assert 900 <= sum(active) / len(active) <= 1000
    # ~1 MB of operators and chain prices, plus ~1.5-2.5 MB of nominator positions (a few
    # thousand per document: 100 nominators on each of 940 operators would be ~45 MB).
    assert max(len(d.data) for d in docs) < 4_000_000
    assert 2_000 <= docs[-1].positions <= 5_000
    # With ids >= 256, storage order (little-endian bytes) differs from numeric order.
    values = [e["value"] for e in orjson.loads(docs[-1].data)["operators"]["entries"]]
    ids = [codec.decode_operator_key(v[:82]) for v in values]
    assert values == sorted(values) and ids != sorted(ids)


def test_generate_refuses_a_database_that_has_epochs(engine):
    summary = generator.generate(engine, "small", seed=1, epochs=5)
    assert summary.epochs == 5
    with pytest.raises(generator.DatabaseNotEmpty, match="already holds 5 epochs"):
        generator.generate(engine, "small", seed=1, epochs=5)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM epochs").scalar_one() == 5
