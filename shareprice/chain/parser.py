"""One epoch's JSON document, in either real format, to exact typed records.

This is the v1 query path and the heart of the backfill, so it is written for speed: one pass
over each dump, fixed-width slicing of storage keys, `int(x, 16)` and orjson, no regexes.

Rules that are easy to get wrong (see DOMAIN.md):

- Format A (indexer storage dump): the operator id comes from the hex storage key, never from the
  entry's `key` (that is only the array position). A key with another pallet or item prefix in
  the `operators` dump is an error, not something to skip.
- An operator with zero stake AND zero shares is skipped, not an error: that is the chain's state
  of an operator registered during this epoch (its first deposit converts at the epoch's end) or
  of one whose stake was fully withdrawn; it has no price. Shares of zero with a positive stake is
  an error (price undefined). Format B likewise lists prices for operators without a stake entry
  (epoch 1 of the real export prices operator 1 before it has stake); those are skipped too.
- Format B: an operator with a stake but no price is an error (the price cannot be derived: the
  export carries no shares).
- Rewards come from `domainStakingSummary.currentEpochRewards` (keys are operator ids, comma-
  grouped like the amounts); an operator absent there has rewards None ("not given"), because the
  real maps are incomplete (the flat export's epoch 218 lists rewards for operator 0 only).

Every failure is one `ParseError` naming epoch, entry and reason; nothing else escapes.

API: `parse_document` for whole documents (v1 path, import). For the backfill, the parts alone,
which skip most of a ~1 MB document: `parse_rewards(data->'domainStakingSummary'->
'currentEpochRewards')`, `operator_rows(values, rewards)` -> plain tuples in OperatorState field
order (no dataclass per operator), `chain_price_rows(values, since_domain_epoch=...)`; the
values are the dumps' entry `value` strings in order (`_entry_values` or straight from SQL).
Fast paths handle the common case inline and hand anything unusual to a strict per-entry path,
so speed never loosens what is accepted. Measured single-core on seed-scale documents (~1 MB,
~924 operators, ~1,550 chain entries): `parse_document(bytes)` ~140 MB/s, ~135,000 operator
states/s; `operator_rows` ~2.3 us per operator (`shareprice bench parse`).
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from shareprice.chain.codec import (
    CHAIN_PRICE_KEY_LEN,
    CHAIN_PRICE_PREFIX,
    KEY_PREFIX_LEN,
    OPERATOR_KEY_LEN,
    OPERATORS_PREFIX,
    decode_chain_price_key,
    decode_decimal,
    decode_grouped,
    decode_operator_key,
    decode_u128,
)
from shareprice.chain.records import (
    PERQ,
    ChainSharePrice,
    EpochRecord,
    Format,
    OperatorState,
)
from shareprice.errors import ShareError

__all__ = [
    "ParseError",
    "detect_format",
    "load_json",
    "chain_price_rows",
    "operator_rows",
    "parse_chain_prices",
    "parse_document",
    "parse_flat_export",
    "parse_operator_states",
    "parse_rewards",
    "parse_storage_dump",
]

_INT32_MAX = 2**31 - 1  # epochs.epoch is a PostgreSQL INTEGER


class ParseError(ShareError, ValueError):
    """A malformed document or entry: which epoch, which entry, and why.

    The caller decides whether to stop or to record the error and continue.
    """

    def __init__(self, reason: str, epoch: int | None = None, entry: str | None = None) -> None:
        self.reason = reason
        self.epoch = epoch
        self.entry = entry
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.epoch is not None:
            where.append(f"epoch {self.epoch}")
        if self.entry:
            where.append(self.entry)
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def __reduce__(self):  # picklable across process pools (the backfill uses them)
        return (ParseError, (self.reason, self.epoch, self.entry))


# --- JSON ----------------------------------------------------------------------------------------


def load_json(data: bytes | bytearray | memoryview | str) -> Any:
    """orjson, falling back to the stdlib only for integers beyond 64 bits (which orjson refuses)
    so that such a number is reported as "exceeds u128" rather than as invalid JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "64-bit" not in str(exc):
            raise ParseError(f"invalid JSON: {exc}") from None
    try:
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"invalid JSON: {exc}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    if isinstance(exc, ParseError):
        return exc.reason
    if isinstance(exc, ValueError):
        return str(exc)
    return f"wrong type ({exc})"


_CONVERTED = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError)


# --- documents ----------------------------------------------------------------------------------


def detect_format(doc: Mapping[str, Any]) -> Format:
    if "operatorStakes" in doc or "operatorSharePrices" in doc:
        return "flat_export"
    if "operators" in doc or "domainStakingSummary" in doc or "operatorEpochSharePrice" in doc:
        return "storage_dump"
    raise ParseError(
        "unrecognized document: neither a storage dump ('operators', 'domainStakingSummary') "
        "nor a flat export ('operatorStakes')",
        _peek_epoch(doc),
    )


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while documents are loaded and parsed (as it was when
    the block ends). A ~1 MB document becomes ~10,000 acyclic containers; left on, the cyclic GC
    scans them (and whatever else the process holds) several times per document: ~2x slower,
    measured. Reference counting still frees everything."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def parse_document(doc: Any) -> EpochRecord:
    """Parse one epoch's document (dict, a one-element list, or JSON bytes/str) in either format."""
    with cyclic_gc_paused():
        return _parse_document(doc)


def _parse_document(doc: Any) -> EpochRecord:
    if isinstance(doc, bytes | bytearray | memoryview | str):
        doc = load_json(doc)
    if type(doc) is list:
        if len(doc) != 1:
            raise ParseError(f"expected one document, got a list of {len(doc)}")
        doc = doc[0]
    if not isinstance(doc, Mapping):
        raise ParseError(f"document is not a JSON object but {_json_type(doc)}")
    if detect_format(doc) == "flat_export":
        return parse_flat_export(doc)
    return parse_storage_dump(doc)


def parse_storage_dump(doc: Mapping[str, Any]) -> EpochRecord:
    """Format A: the indexer's per-epoch storage dump."""
    epoch = _epoch_of(doc)
    end_block = _optional_int(doc, "endBlock", epoch)
    end_hash = _optional_str(doc, "endHash", epoch)
    indexed_at = _optional_int(doc, "timestamp", epoch)
    summary = doc.get("domainStakingSummary")
    total_stake: int | None = None
    rewards: dict[int, int] | None = None
    if summary is not None:
        if not isinstance(summary, Mapping):
            raise ParseError(
                f"expected an object, got {_json_type(summary)}", epoch, "domainStakingSummary"
            )
        if "currentTotalStake" in summary:
            try:
                total_stake = decode_grouped(summary["currentTotalStake"])
            except ValueError as exc:
                raise ParseError(
                    str(exc), epoch, "domainStakingSummary.currentTotalStake"
                ) from None
        if "currentEpochRewards" in summary:
            rewards = parse_rewards(summary["currentEpochRewards"], epoch=epoch)
    if "operators" not in doc:
        raise ParseError("missing field 'operators'", epoch, "operators")
    operators = parse_operator_states(doc["operators"], rewards, epoch=epoch)
    chain = doc.get("operatorEpochSharePrice")
    chain_prices = () if chain is None else parse_chain_prices(chain, epoch=epoch)
    return EpochRecord(
        epoch=epoch,
        format="storage_dump",
        end_block=end_block,
        end_hash=end_hash,
        indexed_at_ms=indexed_at,
        total_stake=total_stake,
        operators=operators,
        chain_prices=chain_prices,
    )


def parse_flat_export(doc: Mapping[str, Any]) -> EpochRecord:
    """Format B: the older flat per-epoch export (prices given, no shares)."""
    epoch = _epoch_of(doc)
    end_block = _optional_int(doc, "endBlock", epoch)
    end_hash = _optional_str(doc, "endHash", epoch)
    total_stake = None
    if doc.get("totalStake") is not None:
        try:
            total_stake = decode_decimal(doc["totalStake"])
        except ValueError as exc:
            raise ParseError(str(exc), epoch, "totalStake") from None
    stakes = _decimal_map(doc, "operatorStakes", epoch, required=True)
    prices = _decimal_map(doc, "operatorSharePrices", epoch, required=False)
    rewards = _decimal_map(doc, "rewards", epoch, required=False)
    states = []
    for operator_id in sorted(stakes):
        price = prices.get(operator_id)
        if price is None:
            raise ParseError(
                "operator has a stake but no price in operatorSharePrices",
                epoch,
                f"operatorStakes['{operator_id}']",
            )
        if price == 0:
            raise ParseError("zero share price", epoch, f"operatorSharePrices['{operator_id}']")
        states.append(
            OperatorState(
                operator_id=operator_id,
                stake=stakes[operator_id],
                shares=None,
                storage_fee=None,
                nomination_tax=None,
                status=None,
                share_price_perq=price,
                rewards=rewards.get(operator_id),
            )
        )
    return EpochRecord(
        epoch=epoch,
        format="flat_export",
        end_block=end_block,
        end_hash=end_hash,
        indexed_at_ms=None,
        total_stake=total_stake,
        operators=tuple(states),
        chain_prices=(),
    )


# --- the parts (also the backfill's fast path) ---------------------------------------------------


def parse_rewards(raw: Any, *, epoch: int | None = None) -> dict[int, int]:
    """`currentEpochRewards`: {'<operator id>': '<amount>'}, both comma-grouped (toHuman)."""
    where = "domainStakingSummary.currentEpochRewards"
    if not isinstance(raw, Mapping):
        raise ParseError(f"expected an object, got {_json_type(raw)}", epoch, where)
    out: dict[int, int] = {}
    for key, value in raw.items():
        try:
            out[decode_grouped(key)] = decode_grouped(value)
        except ValueError as exc:
            raise ParseError(str(exc), epoch, f"{where}[{key!r}]") from None
    return out


#: One operator as a plain tuple in OperatorState's field order: (operator_id, stake, shares,
#: storage_fee, nomination_tax, status, share_price_perq, rewards).
OperatorRow = tuple[int, int, int, int, int, str, int, int | None]


def parse_operator_states(
    dump: Any, rewards: Mapping[int, int] | None = None, *, epoch: int | None = None
) -> tuple[OperatorState, ...]:
    """The `operators` storage dump to states sorted by operator id."""
    values = _entry_values(dump, "operators", epoch)
    return tuple(OperatorState(*row) for row in operator_rows(values, rewards, epoch=epoch))


def operator_rows(
    values: Sequence[str], rewards: Mapping[int, int] | None = None, *, epoch: int | None = None
) -> list[OperatorRow]:
    """The backfill's fast path: `operators` entry values ('0x<storage key>,<payload JSON>',
    in dump order) to plain tuples sorted by operator id, with no dataclass per operator.

    The values can come from `parse_operator_states`' caller or straight from SQL, e.g.
    `SELECT string_agg(e->>'value', E'\\n' ORDER BY i) FROM jsonb_array_elements(
    data->'operators'->'entries') WITH ORDINALITY AS t(e, i)`, then `.split('\\n')` (a value
    cannot contain a raw newline: it is JSON). Errors name `operators.entries[i]` by position.
    """
    rows: list[OperatorRow] = []
    append = rows.append
    loads = orjson.loads
    prefix, key_len, p = OPERATORS_PREFIX, OPERATOR_KEY_LEN, KEY_PREFIX_LEN
    rewards_get = rewards.get if rewards is not None else _no_rewards
    for index, value in enumerate(values):
        # The common case inline (this loop runs ~3.5 million times in a backfill); anything
        # unusual goes to the strict path, which either accepts it or says exactly why not.
        # int(x, 16) alone is too lenient (it takes '_', signs, spaces, non-ASCII digits), so
        # the fast path requires an ASCII value (an O(1) flag in CPython) free of those
        # characters and of JSON escapes; real and generated payloads always are.
        try:
            if (
                value[key_len] != ","
                or not value.startswith(prefix)
                or not value.isascii()
                or "_" in value
                or " " in value
                or "-" in value
                or "+" in value
                or "\\" in value
            ):
                raise ValueError
            payload = loads(value[key_len + 1 :])
            stake = payload["currentTotalStake"]
            shares = payload["currentTotalShares"]
            fee = payload["totalStorageFeeDeposit"]
            tax = payload["nominationTax"]
            status = payload["partialStatus"]
            if (
                type(stake) is not str
                or type(shares) is not str
                or type(fee) is not str
                or len(stake) > 34
                or len(shares) > 34
                or len(fee) > 34
                or stake[1] != "x"
                or shares[1] != "x"
                or fee[1] != "x"
                or type(tax) is not int
                or not 0 <= tax <= 100
                or type(status) is not dict
                or len(status) != 1
            ):
                raise ValueError
            stake = int(stake, 16)
            shares = int(shares, 16)
            if not shares:
                raise ValueError
            raw_id = bytes.fromhex(value[p:key_len])
            if len(raw_id) != 8:  # fromhex skips whitespace
                raise ValueError
            operator_id = int.from_bytes(raw_id, "little")
            append(
                (
                    operator_id,
                    stake,
                    shares,
                    int(fee, 16),
                    tax,
                    next(iter(status)),
                    stake * PERQ // shares,
                    rewards_get(operator_id),
                )
            )
        except Exception:
            row = _operator_row_strict(value, index, epoch)
            if row is not None:
                operator_id = row[0]
                append((*row, rewards_get(operator_id)))
    rows.sort(key=_first)
    for previous, current in zip(rows, rows[1:], strict=False):
        if previous[0] == current[0]:
            raise ParseError(f"operator {current[0]} appears twice", epoch, "operators")
    return rows


def _operator_row_strict(
    value: Any, index: int, epoch: int | None
) -> tuple[int, int, int, int, int, str, int] | None:
    """One operator entry value, checked field by field. None = no price yet (0 stake, 0 shares)."""
    try:
        if type(value) is not str:
            raise ValueError(f"entry value is {_json_type(value)}, not a string")
        comma = value.find(",")
        key = value[:comma] if comma >= 0 else value
        operator_id = decode_operator_key(key)
        if comma < 0:
            raise ValueError("entry value has no payload after the storage key")
        payload = load_json(value[comma + 1 :])
        if type(payload) is not dict:
            raise ValueError(f"operator payload is {_json_type(payload)}, not an object")
        stake = _u128_field(payload, "currentTotalStake")
        shares = _u128_field(payload, "currentTotalShares")
        fee = _u128_field(payload, "totalStorageFeeDeposit")
        tax = payload["nominationTax"]
        if type(tax) is not int or not 0 <= tax <= 100:
            raise ValueError(f"nominationTax {tax!r} is not a percentage 0-100")
        status = payload["partialStatus"]
        if type(status) is dict and len(status) == 1:
            status = next(iter(status))
        elif type(status) is not str:
            raise ValueError(f"partialStatus {_show(status)} is not a one-key object")
        if shares == 0:
            if stake == 0:
                return None  # registered this epoch, or fully withdrawn: no price yet
            raise ValueError(f"zero currentTotalShares with stake {stake}: price undefined")
        return (operator_id, stake, shares, fee, tax, status, stake * PERQ // shares)
    except _CONVERTED as exc:
        raise ParseError(_reason(exc), epoch, f"operators.entries[{index}]") from None


def parse_chain_prices(
    dump: Any, *, epoch: int | None = None, since_domain_epoch: int | None = None
) -> tuple[ChainSharePrice, ...]:
    """`operatorEpochSharePrice`: the chain's SHARES-PER-STAKE records, sorted by key."""
    values = _entry_values(dump, "operatorEpochSharePrice", epoch)
    rows = chain_price_rows(values, epoch=epoch, since_domain_epoch=since_domain_epoch)
    return tuple(ChainSharePrice(*row) for row in rows)


def chain_price_rows(
    values: Sequence[str], *, epoch: int | None = None, since_domain_epoch: int | None = None
) -> list[tuple[int, int, int, int]]:
    """Fast path: entry values to (operator, domain, domain epoch, shares per stake) tuples,
    sorted. Each dump repeats the history (the real chain all of it, 2,878 entries at epoch
    2647); `since_domain_epoch` drops older entries before their values are decoded, for
    callers that stored them already."""
    rows: list[tuple[int, int, int, int]] = []
    append = rows.append
    prefix, key_len, p = CHAIN_PRICE_PREFIX, CHAIN_PRICE_KEY_LEN, KEY_PREFIX_LEN
    since = -1 if since_domain_epoch is None else since_domain_epoch
    for index, value in enumerate(values):
        try:
            if value[key_len] != "," or not value.startswith(prefix):
                raise ValueError
            raw = bytes.fromhex(value[p:key_len])
            if len(raw) != 16:
                raise ValueError
            domain_epoch = int.from_bytes(raw[12:16], "little")
            if domain_epoch < since:
                continue
            text = value[key_len + 1 :]
            if not (text.isascii() and text.isdigit() and len(text) <= 38 and text[0] != "0"):
                raise ValueError
            append(
                (
                    int.from_bytes(raw[0:8], "little"),
                    int.from_bytes(raw[8:12], "little"),
                    domain_epoch,
                    int(text),
                )
            )
        except Exception:
            row = _chain_row_strict(value, index, epoch)
            if row[2] >= since:
                append(row)
    rows.sort()
    for previous, current in zip(rows, rows[1:], strict=False):
        if previous[:3] == current[:3]:
            raise ParseError(
                f"operator {current[0]}, domain {current[1]}, epoch {current[2]} appears twice",
                epoch,
                "operatorEpochSharePrice",
            )
    return rows


def _chain_row_strict(value: Any, index: int, epoch: int | None) -> tuple[int, int, int, int]:
    try:
        if type(value) is not str:
            raise ValueError(f"entry value is {_json_type(value)}, not a string")
        comma = value.find(",")
        key = value[:comma] if comma >= 0 else value
        operator_id, domain_id, domain_epoch = decode_chain_price_key(key)
        if comma < 0:
            raise ValueError("entry value has no share price after the storage key")
        price = decode_decimal(value[comma + 1 :])
        if price == 0:
            raise ValueError("zero shares-per-stake price")
        return (operator_id, domain_id, domain_epoch, price)
    except _CONVERTED as exc:
        raise ParseError(_reason(exc), epoch, f"operatorEpochSharePrice.entries[{index}]") from None


# --- helpers --------------------------------------------------------------------------------------


def _first(row: tuple) -> int:
    return row[0]


def _no_rewards(_operator_id: int) -> None:
    return None


def _u128_field(payload: dict[str, Any], name: str) -> int:
    if name not in payload:
        raise KeyError(name)
    try:
        return decode_u128(payload[name])
    except ValueError as exc:
        raise ValueError(f"{exc} in {name}") from None


def _entry_values(dump: Any, name: str, epoch: int | None) -> list[Any]:
    """The `value` strings of a storage dump's entries, in order."""
    if not isinstance(dump, Mapping):
        raise ParseError(f"expected a storage dump object, got {_json_type(dump)}", epoch, name)
    entries = dump.get("entries")
    if type(entries) is not list:
        raise ParseError(
            "missing field 'entries'" if entries is None else "'entries' is not a list",
            epoch,
            name,
        )
    count = dump.get("count")
    if count is not None and count != len(entries):
        raise ParseError(f"count {count!r} but {len(entries)} entries", epoch, name)
    try:
        return [entry["value"] for entry in entries]
    except (KeyError, TypeError):
        for index, entry in enumerate(entries):
            if type(entry) is not dict:
                reason = f"entry is {_json_type(entry)}, not an object"
            elif "value" not in entry:
                reason = "missing field 'value'"
            else:
                continue
            raise ParseError(reason, epoch, f"{name}.entries[{index}]") from None
        raise


def _decimal_map(doc: Mapping[str, Any], name: str, epoch: int, *, required: bool) -> dict:
    raw = doc.get(name)
    if raw is None:
        if required:
            raise ParseError(f"missing field {name!r}", epoch, name)
        return {}
    if not isinstance(raw, Mapping):
        raise ParseError(f"expected an object, got {_json_type(raw)}", epoch, name)
    out = {}
    for key, value in raw.items():
        try:
            out[decode_decimal(key)] = decode_decimal(value)
        except ValueError as exc:
            raise ParseError(str(exc), epoch, f"{name}[{key!r}]") from None
    return out


def _epoch_of(doc: Mapping[str, Any]) -> int:
    if "epoch" not in doc:
        raise ParseError("missing field 'epoch'", None, "epoch")
    epoch = doc["epoch"]
    if type(epoch) is not int or not 0 <= epoch <= _INT32_MAX:
        raise ParseError(f"epoch {epoch!r} is not a non-negative integer", None, "epoch")
    return epoch


def _peek_epoch(doc: Mapping[str, Any]) -> int | None:
    epoch = doc.get("epoch")
    return epoch if type(epoch) is int and 0 <= epoch <= _INT32_MAX else None


def _optional_int(doc: Mapping[str, Any], name: str, epoch: int) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if type(value) is not int or value < 0 or value > 2**63 - 1:
        raise ParseError(f"expected a non-negative integer, got {value!r}", epoch, name)
    return value


def _optional_str(doc: Mapping[str, Any], name: str, epoch: int) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if type(value) is not str:
        raise ParseError(f"expected a string, got {_json_type(value)}", epoch, name)
    return value


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
