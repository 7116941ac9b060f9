"""The generator's nominators obey the chain's position rules, checked on the raw documents.

Everything here decodes the generated JSON with plain `json` and `int(x, 16)`, independently of
shareprice's codec and parser (only the last tests hand the documents to
chain.nominators.parse_positions, to show the real decoder accepts them). What is checked, per
document and across consecutive documents:

- key formats: 0x + Domains prefix + item prefix + operator u64 LE (16 hex) + AccountId32 (64 hex),
  amounts 0x + 32 hex digits or a JSON number, payload fields in the real sample's order;
- operator totals: currentTotalShares - withdrawalsInEpoch - sum of effective shares is in
  [0, number of deposits] (withdrawn shares leave the nominator at once and the operator at the
  end of the epoch; in epochs without withdrawals this is exactly the issue's rule), and the
  storage fees of all deposits sum to totalStorageFeeDeposit;
- DepositOnHold keys are the deposit keys, every ended pending epoch has its chain price;
- lazy conversion: when a nominator deposits again, known.shares grows by exactly
  floor(P * amount / 10**18) for its old pending deposit; a withdrawal's unlocking amount is
  floor(shares * 10**18 / (P + 1));
- withdrawals disappear only once unlockable (unlock block <= headDomainNumber) and do disappear.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import Counter

import pytest

from shareprice.chain.nominators import parse_positions
from shareprice.chain.parser import parse_document
from shareprice.ingest import generator

DOMAINS = "0b41d0c7f7b4485bd7be1d66066b00ad"
DEPOSITS = "74a614db8021c6bd0a028aafdf29dd08"
WITHDRAWALS = "5eb75f5fdeadda8841398b656c7e353d"
HOLD = "1ca7f84f7c82084ab74e8cf7f7e0149a"
OPERATORS = "34a0a3fbf14e6c92456ca7bd91d59a57"
CHAIN_PRICE = "f16a4d4929cfe61f4f6bf4153bb44d9d"
POSITION_KEY = 2 + 32 + 32 + 16 + 64
E18 = 10**18


def amount(raw) -> int:
    """A u128 as polkadot.js writes it: a JSON number, or 0x + 32 hex digits."""
    if isinstance(raw, int):
        assert 0 <= raw < 2**53, raw
        return raw
    assert isinstance(raw, str) and raw.startswith("0x") and len(raw) == 34, raw
    assert raw[2:] == raw[2:].lower()
    return int(raw, 16)


def le(hex_digits: str) -> int:
    return int.from_bytes(bytes.fromhex(hex_digits), "little")


def position_key(value: str, item: str) -> tuple[int, str, str]:
    key, payload = value.split(",", 1)
    assert len(key) == POSITION_KEY, key
    assert key.startswith("0x" + DOMAINS + item), key
    int(key[2:], 16)  # all hex
    assert key == key.lower()
    return le(key[66:82]), key[82:], payload


@dataclasses.dataclass
class Doc:
    epoch: int
    head: int
    operators: dict[int, dict]
    prices: dict[tuple[int, int], int]
    deposits: dict[tuple[int, str], dict]
    holds: dict[tuple[int, str], int]
    withdrawals: dict[tuple[int, str], dict]
    raw: dict


def decode(data: bytes) -> Doc:
    raw = json.loads(data)
    epoch = raw["epoch"]
    operators = {}
    for entry in raw["operators"]["entries"]:
        key, payload = entry["value"].split(",", 1)
        assert key.startswith("0x" + DOMAINS + OPERATORS)
        operators[le(key[66:82])] = json.loads(payload)
    prices = {}
    for entry in raw["operatorEpochSharePrice"]["entries"]:
        key, value = entry["value"].split(",", 1)
        assert key.startswith("0x" + DOMAINS + CHAIN_PRICE) and le(key[82:90]) == 0
        prices[(le(key[66:82]), le(key[90:98]))] = int(value)
    items = {}
    for name, item in (
        ("deposits", DEPOSITS),
        ("depositOnHold", HOLD),
        ("withdrawals", WITHDRAWALS),
    ):
        dump = raw[name]
        entries = dump["entries"]
        assert dump["count"] == len(entries)
        assert [e["key"] for e in entries] == [[str(k)] for k in range(len(entries))]
        values = [e["value"] for e in entries]
        assert values == sorted(values)  # storage order: by key bytes
        decoded = {}
        for value in values:
            operator_id, account, payload = position_key(value, item)
            decoded[(operator_id, account)] = payload
        assert len(decoded) == len(values)  # one entry per (operator, account)
        items[name] = decoded
    deposits = {k: json.loads(v) for k, v in items["deposits"].items()}
    holds = {}
    for k, v in items["depositOnHold"].items():
        assert v.isdigit(), v
        holds[k] = int(v)
    withdrawals = {k: json.loads(v) for k, v in items["withdrawals"].items()}
    head = int(raw["headDomainNumber"])
    return Doc(epoch, head, operators, prices, deposits, holds, withdrawals, raw)


def check_document(doc: Doc) -> Counter:
    """Every single-document rule; returns what was seen (for the callers' 'it happened')."""
    seen: Counter = Counter()
    per_operator: dict[int, list] = {i: [] for i in doc.operators}
    assert set(doc.holds) == set(doc.deposits)
    assert set(doc.withdrawals) <= set(doc.deposits)  # nominator_key_sets' rule, as on the chain
    for (operator_id, account), payload in doc.deposits.items():
        assert operator_id in doc.operators
        assert list(payload) == ["known", "pending"]
        known, pending = payload["known"], payload["pending"]
        assert list(known) == ["shares", "storageFeeDeposit"]
        shares, fee = amount(known["shares"]), amount(known["storageFeeDeposit"])
        effective = shares
        if pending is not None:
            assert list(pending) == ["effectiveDomainEpoch", "amount", "storageFeeDeposit"]
            domain, pending_epoch = pending["effectiveDomainEpoch"]
            assert domain == 0 and 0 <= pending_epoch <= doc.epoch
            pending_amount = amount(pending["amount"])
            fee += amount(pending["storageFeeDeposit"])
            assert pending_amount > 0
            if pending_epoch < doc.epoch:
                price = doc.prices[(operator_id, pending_epoch)]  # ended: its price is there
                effective += price * pending_amount // E18
                seen["ended pending"] += 1
                if shares == 0:
                    seen["lazy, known 0"] += 1
            else:
                seen["pending this epoch"] += 1
        elif shares == 0:
            # Withdrew everything: the chain (do_withdraw_stake) keeps the entries at 0 until
            # do_unlock_funds claims the last withdrawal, then removes all of them.
            assert (operator_id, account) in doc.withdrawals, (doc.epoch, operator_id, account)
            assert fee == 0 and doc.holds[(operator_id, account)] == 0
            seen["withdrew all, entries kept"] += 1
        if shares or pending is not None:
            assert doc.holds[(operator_id, account)] > 0
        per_operator[operator_id].append((effective, fee))
    for operator_id, payload in doc.operators.items():
        positions = per_operator[operator_id]
        total_shares = amount(payload["currentTotalShares"])
        in_epoch = amount(payload["withdrawalsInEpoch"])
        dust = total_shares - in_epoch - sum(e for e, _ in positions)
        assert 0 <= dust <= len(positions), (doc.epoch, operator_id, dust, len(positions))
        if in_epoch == 0:  # the rule, literally
            assert 0 <= total_shares - sum(e for e, _ in positions) <= len(positions)
        seen["dust"] += dust
        assert sum(f for _, f in positions) == amount(payload["totalStorageFeeDeposit"])
        if total_shares:
            assert positions, (doc.epoch, operator_id)  # an operator with shares has holders
    for (operator_id, _account), payload in doc.withdrawals.items():
        assert operator_id in doc.operators
        assert list(payload) == [
            "totalWithdrawalAmount",
            "totalStorageFeeWithdrawal",
            "withdrawals",
            "withdrawalInShares",
        ]
        unlocking = payload["withdrawals"]
        in_shares = payload["withdrawalInShares"]
        assert unlocking or in_shares is not None
        assert amount(payload["totalWithdrawalAmount"]) == sum(
            amount(w["amountToUnlock"]) for w in unlocking
        )
        refunds = sum(amount(w["storageFeeRefund"]) for w in unlocking)
        if in_shares is not None:
            assert list(in_shares) == [
                "domainEpoch",
                "unlockAtConfirmedDomainBlockNumber",
                "shares",
                "storageFeeRefund",
            ]
            domain, withdrawal_epoch = in_shares["domainEpoch"]
            assert domain == 0 and withdrawal_epoch <= doc.epoch
            assert in_shares["unlockAtConfirmedDomainBlockNumber"] > withdrawal_epoch * 100
            assert amount(in_shares["shares"]) > 0
            refunds += amount(in_shares["storageFeeRefund"])
            if withdrawal_epoch < doc.epoch:
                assert (operator_id, withdrawal_epoch) in doc.prices
            seen["in shares"] += 1
        assert amount(payload["totalStorageFeeWithdrawal"]) == refunds
        for w in unlocking:
            assert list(w) == [
                "unlockAtConfirmedDomainBlockNumber",
                "amountToUnlock",
                "storageFeeRefund",
            ]
            seen["unlocking"] += 1
            if w["unlockAtConfirmedDomainBlockNumber"] <= doc.head:
                seen["unlockable, not yet claimed"] += 1
    seen["positions"] += len(doc.deposits)
    return seen


def price_of(before: Doc, after: Doc, operator_id: int, epoch: int) -> int:
    """The chain price of an ended epoch: in `before` when that epoch ended before it (it may
    leave `after` once nothing references it), else recorded since, in `after`."""
    if epoch < before.epoch:
        return before.prices[(operator_id, epoch)]
    return after.prices[(operator_id, epoch)]


def check_transition(before: Doc, after: Doc, owners: dict[int, str]) -> Counter:
    """Rules between consecutive documents: exact lazy conversions, unlocks only when due."""
    assert after.epoch == before.epoch + 1
    seen: Counter = Counter()
    for key, old in before.deposits.items():
        new = after.deposits.get(key)
        pending = old["pending"]
        if new is None or pending is None or new["pending"] is None:
            continue
        pending_epoch = pending["effectiveDomainEpoch"][1]
        if new["pending"]["effectiveDomainEpoch"][1] != after.epoch or pending_epoch >= after.epoch:
            continue
        withdrawal = after.withdrawals.get(key)
        if withdrawal and (withdrawal["withdrawalInShares"] or {}).get("domainEpoch") == [
            0,
            after.epoch,
        ]:
            continue  # also withdrew: known moved by that too
        if owners.get(key[0]) == key[1]:
            continue  # the owner's known shares also grow by the staked tax
        # Deposited again in `after`: the old pending was converted, at its epoch's price.
        price = price_of(before, after, key[0], pending_epoch)
        expected = amount(old["known"]["shares"]) + price * amount(pending["amount"]) // E18
        assert amount(new["known"]["shares"]) == expected, (after.epoch, key)
        assert amount(new["known"]["storageFeeDeposit"]) == amount(
            old["known"]["storageFeeDeposit"]
        ) + amount(pending["storageFeeDeposit"])
        seen["lazy conversion"] += 1
    for key, old in before.withdrawals.items():
        new = after.withdrawals.get(key)
        old_unlocks = [w["unlockAtConfirmedDomainBlockNumber"] for w in old["withdrawals"]]
        new_list = new["withdrawals"] if new else []
        new_unlocks = [w["unlockAtConfirmedDomainBlockNumber"] for w in new_list]
        in_shares = old["withdrawalInShares"]
        if in_shares is not None and in_shares["domainEpoch"][1] < after.epoch:
            still = new is not None and new["withdrawalInShares"] == in_shares
            if not still:
                # Converted: into the list at floor(shares * 1e18 / (P + 1)), or already claimed.
                unlock = in_shares["unlockAtConfirmedDomainBlockNumber"]
                price = price_of(before, after, key[0], in_shares["domainEpoch"][1])
                owed = amount(in_shares["shares"]) * E18 // (price + 1)
                converted = [
                    w for w in new_list if w["unlockAtConfirmedDomainBlockNumber"] == unlock
                ]
                if converted:
                    assert amount(converted[0]["amountToUnlock"]) == owed
                    assert converted[0]["storageFeeRefund"] == in_shares["storageFeeRefund"]
                    seen["withdrawal converted"] += 1
                else:
                    assert unlock <= after.head, (after.epoch, key)
                    seen["withdrawal claimed"] += 1
        for unlock in old_unlocks:
            if unlock not in new_unlocks:
                assert unlock <= after.head, (after.epoch, key, unlock)  # gone only once due
                seen["withdrawal claimed"] += 1
        if new is None:
            seen["withdrawal entry gone"] += 1
    return seen


def run(profile, epochs: int, seed: int = 0) -> tuple[list[Doc], Counter, dict[int, str]]:
    docs: list[Doc] = []
    seen: Counter = Counter()
    owners: dict[int, str] = {}
    previous = None
    for generated in generator.iter_documents(profile, seed=seed, epochs=epochs):
        doc = decode(generated.data)
        assert generated.positions == len(doc.deposits)
        assert generated.withdrawal_entries == len(doc.withdrawals)
        for operator_id in doc.operators:
            if operator_id not in owners:  # registration: the owner's deposit is the only one
                (account,) = [a for (o, a) in doc.deposits if o == operator_id]
                owners[operator_id] = account
        seen += check_document(doc)
        if previous is not None:
            seen += check_transition(previous, doc, owners)
        previous = doc
        docs.append(doc)
    return docs, seen, owners


@pytest.fixture(scope="module")
def small_run():
    return run("small", 80, seed=0)


def test_small_profile_documents_obey_every_rule(small_run):
    docs, seen, _owners = small_run
    print(dict(seen))
    # Every kind of event happened, more than a few times.
    for what in (
        "ended pending",
        "lazy, known 0",
        "pending this epoch",
        "in shares",
        "unlocking",
        "lazy conversion",
        "withdrawal converted",
        "withdrawal claimed",
        "withdrawal entry gone",
        "unlockable, not yet claimed",
        "withdrew all, entries kept",
    ):
        assert seen[what] >= 3, what


def test_withdrawals_are_claimed_not_left_forever(small_run):
    docs, _seen, _owners = small_run
    last = docs[-1]
    for payload in last.withdrawals.values():
        for w in payload["withdrawals"]:
            # claim_probability 0.3 per epoch: 20 epochs unclaimed is a 1-in-1,000 event
            assert w["unlockAtConfirmedDomainBlockNumber"] > last.head - 20 * 100


def test_counts_per_operator_stay_in_the_profiles_range(small_run):
    docs, _seen, owners = small_run
    profile = generator.PROFILES["small"]
    for doc in docs:
        counts = Counter(o for o, _a in doc.deposits)
        assert max(counts.values(), default=0) <= profile.nominators_high
        # The owner is among them while the operator is registered.
        for operator_id, payload in doc.operators.items():
            if "registered" in payload["partialStatus"]:
                assert (operator_id, owners[operator_id]) in doc.deposits
    last = Counter(o for o, _a in docs[-1].deposits)
    assert profile.nominators_low <= statistics.median(last.values()) <= profile.nominators_high


def test_demo_profile_prefix_obeys_the_rules_with_a_few_large_pools():
    profile = generator.PROFILES["demo"]
    assert (profile.nominators_low, profile.nominators_high) == (2, 120)
    docs, seen, _owners = run("demo", 360, seed=0)  # seed 0: what `make run` loads
    print(dict(seen))
    assert seen["lazy conversion"] >= 20 and seen["withdrawal claimed"] >= 5
    last = docs[-1]
    counts = Counter(o for o, _a in last.deposits)
    assert all(2 <= c <= 120 for c in counts.values() if c > 1) and min(counts.values()) >= 1
    # Heavy tailed: most pools small, a few large ones (the real chain's hold 105 and 72).
    assert statistics.median(counts.values()) <= 10
    assert max(counts.values()) >= 40
    # What `make run` loads stays a demo: ~0.5 GB over 3,734 epochs, not gigabytes.
    sizes = [len(g.data) for g in generator.iter_documents("demo", seed=0, epochs=360)][-50:]
    assert statistics.mean(sizes) < 200_000


def test_chain_prices_needed_by_pending_deposits_outlive_the_window():
    """Lazy deposits keep referencing old prices: those entries stay beyond chain_window."""
    profile = dataclasses.replace(generator.PROFILES["small"], chain_window=5)
    docs, seen, _owners = run(profile, 80, seed=4)
    old = 0
    for doc in docs:
        for (operator_id, _a), payload in doc.deposits.items():
            pending = payload["pending"]
            if pending and pending["effectiveDomainEpoch"][1] < doc.epoch - profile.chain_window:
                assert (operator_id, pending["effectiveDomainEpoch"][1]) in doc.prices
                old += 1
        # And the window still bounds what nothing references.
        referenced = {
            (o, p["pending"]["effectiveDomainEpoch"][1])
            for (o, _a), p in doc.deposits.items()
            if p["pending"]
        }
        referenced |= {
            (o, p["withdrawalInShares"]["domainEpoch"][1])
            for (o, _a), p in doc.withdrawals.items()
            if p["withdrawalInShares"]
        }
        for key in doc.prices:
            assert key in referenced or key[1] > doc.epoch - 1 - profile.chain_window, (
                doc.epoch,
                key,
            )
    assert old > 20


def test_seed_scale_prefix_is_heavy_tailed_and_consistent():
    """Most seed-scale operators have a handful of nominators, a few have 50-150."""
    profile = generator.PROFILES["seed-scale"]
    targets = generator.nominator_targets_for(profile, seed=0)
    assert all(profile.nominators_low <= t <= profile.nominators_high for t in targets)
    assert statistics.median(targets) <= 3
    large = sum(1 for t in targets if t >= 50)
    assert 5 <= large <= 60
    assert 2.5 <= statistics.mean(targets) <= 5  # ~3,000-5,000 positions over ~940 operators
    seen: Counter = Counter()
    previous = None
    for generated in generator.iter_documents("seed-scale", seed=0, epochs=60):
        if generated.epoch % 20 != 19:
            continue
        doc = decode(generated.data)
        seen += check_document(doc)
        previous = doc
    assert previous is not None and len(previous.deposits) > 900
    assert seen["dust"] > 0  # rounding dust does occur (and stays within its bounds)


def test_parse_positions_accepts_every_generated_document(small_run):
    docs, _seen, _owners = small_run
    for doc in docs:
        positions = parse_positions(doc.raw, doc.epoch)
        assert len(positions.deposits) == len(doc.deposits)
        assert len(positions.holds) == len(doc.holds)
        assert len(positions.withdrawals) == len(doc.withdrawals)
        assert positions.head_domain_number == doc.head
        assert {(d.operator_id, d.account.hex()) for d in positions.deposits} == set(doc.deposits)
        # The main parser still reads the same document.
        assert parse_document(doc.raw).epoch == doc.epoch


def test_same_seed_same_positions():
    first = [d.data for d in generator.iter_documents("demo", seed=7, epochs=50)]
    again = [d.data for d in generator.iter_documents("demo", seed=7, epochs=50)]
    assert first == again
