"""The chain's number and key encodings, both ways: the parser decodes, the generator encodes.

Keeping both directions in one module lets property tests prove they are inverses, so the
generator's documents exercise exactly the parser's rules. Decoders are strict (a value the
indexer could not have written is rejected, not guessed at) and fast: they are called millions of
times by the backfill, so they use only C-level str methods and int(), no regexes.

Every decoder raises ValueError with a short reason; the parser adds epoch and entry to it.
"""

from __future__ import annotations

U128_MAX = 2**128 - 1
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1

#: polkadot.js `toJSON()` writes integers of up to 52 bits as JSON numbers, bigger ones as hex.
JSON_NUMBER_MAX_BITS = 52

#: twox128("Domains"): the pallet prefix of every storage key the indexer dumps.
DOMAINS_PALLET = "0b41d0c7f7b4485bd7be1d66066b00ad"
#: twox128 of the storage items the parser reads.
OPERATORS_ITEM = "34a0a3fbf14e6c92456ca7bd91d59a57"
OPERATOR_EPOCH_SHARE_PRICE_ITEM = "f16a4d4929cfe61f4f6bf4153bb44d9d"
#: Items the generator writes for realism only (the parser ignores them).
DEPOSITS_ITEM = "74a614db8021c6bd0a028aafdf29dd08"
WITHDRAWALS_ITEM = "5eb75f5fdeadda8841398b656c7e353d"
OPERATOR_HIGHEST_SLOT_ITEM = "9b10f08244b8d9e7e5ce3c5157ff0134"

#: "0x" + pallet + item: the part of a key before the item's own key.
KEY_PREFIX_LEN = 2 + 32 + 32
OPERATORS_PREFIX = "0x" + DOMAINS_PALLET + OPERATORS_ITEM
CHAIN_PRICE_PREFIX = "0x" + DOMAINS_PALLET + OPERATOR_EPOCH_SHARE_PRICE_ITEM
OPERATOR_KEY_LEN = KEY_PREFIX_LEN + 16  # u64 LE
CHAIN_PRICE_KEY_LEN = KEY_PREFIX_LEN + 16 + 8 + 8  # u64 LE + u32 LE + u32 LE


def _show(value: object, limit: int = 48) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _wrong_type(raw: object, expected: str) -> ValueError:
    if type(raw) is float:
        # orjson turns integers beyond 64 bits into floats: say so rather than just "float".
        return ValueError(
            f"number {raw!r} is not an exact integer (a fraction, or beyond 64 bits where JSON "
            f"numbers lose precision); expected {expected}"
        )
    return ValueError(f"expected {expected}, got {type(raw).__name__} {_show(raw)}")


def _check_u128(value: int, raw: object) -> int:
    if value > U128_MAX:
        raise ValueError(f"number {_show(raw)} exceeds u128")
    return value


# --- u128 as 0x hex (or a small JSON number) -------------------------------------------------


def decode_u128(raw: object) -> int:
    """A u128 as polkadot.js `toJSON()` writes it: '0x' + hex (often zero-padded to 32 digits),
    or a plain non-negative JSON integer for values of up to 52 bits (typically 0)."""
    if type(raw) is str:
        # isascii + isalnum rejects signs, '_', whitespace and non-ASCII digits, which int()
        # would otherwise accept; int() then rejects the non-hex letters.
        digits = raw[2:]
        if raw[:2] != "0x" or not digits or not digits.isascii() or not digits.isalnum():
            raise ValueError(f"bad hex {_show(raw)}")
        try:
            value = int(digits, 16)
        except ValueError:
            raise ValueError(f"bad hex {_show(raw)}") from None
        if value > U128_MAX:
            raise ValueError(f"hex {_show(raw)} exceeds u128")
        return value
    if type(raw) is int:
        if raw < 0:
            raise ValueError(f"negative number {raw}")
        return _check_u128(raw, raw)
    raise _wrong_type(raw, "a 0x hex string or integer")


def encode_u128(value: int) -> str | int:
    """What polkadot.js `toJSON()` writes for a u128: a number up to 52 bits, else padded hex."""
    if not 0 <= value <= U128_MAX:
        raise ValueError(f"{value} is not a u128")
    if value.bit_length() <= JSON_NUMBER_MAX_BITS:
        return value
    return f"0x{value:032x}"


def encode_u128_hex(value: int) -> str:
    """Always hex, zero-padded to 32 digits (the form of large balances)."""
    if not 0 <= value <= U128_MAX:
        raise ValueError(f"{value} is not a u128")
    return f"0x{value:032x}"


# --- plain decimal strings (flat export, chain prices) -----------------------------------------


def decode_decimal(raw: object) -> int:
    """A non-negative u128 as a plain decimal string ('123') or JSON integer."""
    if type(raw) is str:
        if not raw or not raw.isascii() or not raw.isdigit():
            raise ValueError(f"bad decimal {_show(raw)}")
        return _check_u128(int(raw), raw)
    if type(raw) is int:
        if raw < 0:
            raise ValueError(f"negative number {raw}")
        return _check_u128(raw, raw)
    raise _wrong_type(raw, "a decimal string")


# --- comma-grouped decimal strings (polkadot.js toHuman) ---------------------------------------


def decode_grouped(raw: object) -> int:
    """A non-negative integer as polkadot.js `toHuman()` writes it: '1,234,567' (or '12').

    Strict by round trip: with commas, only the canonical grouping of the number is accepted,
    which rejects misplaced commas, leading zeros, signs, '_', whitespace and non-ASCII digits in
    one compare. Plain digits without commas are accepted too (unambiguous).
    """
    if type(raw) is str:
        if "," not in raw:  # below 1,000, or written without grouping: plain digits
            if not raw or not raw.isascii() or not raw.isdigit():
                raise ValueError(f"bad comma-grouped number {_show(raw)}")
            return _check_u128(int(raw), raw)
        try:
            value = int(raw.replace(",", ""))
        except ValueError:
            raise ValueError(f"bad comma-grouped number {_show(raw)}") from None
        if value < 0 or f"{value:,}" != raw:
            raise ValueError(f"bad comma-grouped number {_show(raw)}")
        return _check_u128(value, raw)
    if type(raw) is int:
        if raw < 0:
            raise ValueError(f"negative number {raw}")
        return _check_u128(raw, raw)
    raise _wrong_type(raw, "a comma-grouped number")


def encode_grouped(value: int) -> str:
    if value < 0:
        raise ValueError(f"{value} is negative")
    return f"{value:,}"


# --- little-endian integers and storage keys ---------------------------------------------------


def decode_le(hex_digits: str, width_bytes: int) -> int:
    """An unsigned little-endian integer of exactly width_bytes from hex digits."""
    if len(hex_digits) != 2 * width_bytes:
        raise ValueError(f"expected {2 * width_bytes} hex digits, got {_show(hex_digits)}")
    try:
        data = bytes.fromhex(hex_digits)
    except ValueError:
        raise ValueError(f"bad hex {_show(hex_digits)}") from None
    if len(data) != width_bytes:  # fromhex skips whitespace
        raise ValueError(f"bad hex {_show(hex_digits)}")
    return int.from_bytes(data, "little")


def encode_le(value: int, width_bytes: int) -> str:
    return value.to_bytes(width_bytes, "little").hex()


def storage_key(item: str, *key_hex: str) -> str:
    return "0x" + DOMAINS_PALLET + item + "".join(key_hex)


def encode_operator_key(operator_id: int) -> str:
    return OPERATORS_PREFIX + encode_le(operator_id, 8)


def decode_operator_key(key: str) -> int:
    """Operator id from an `Domains.Operators` storage key (pallet + item + u64 LE)."""
    if len(key) != OPERATOR_KEY_LEN or not key.startswith(OPERATORS_PREFIX):
        raise ValueError(f"not an Operators storage key: {_show(key, 100)}")
    return decode_le(key[KEY_PREFIX_LEN:], 8)


def encode_chain_price_key(operator_id: int, domain_id: int, domain_epoch: int) -> str:
    return (
        CHAIN_PRICE_PREFIX
        + encode_le(operator_id, 8)
        + encode_le(domain_id, 4)
        + encode_le(domain_epoch, 4)
    )


def decode_chain_price_key(key: str) -> tuple[int, int, int]:
    """(operator, domain, domain epoch) from an `OperatorEpochSharePrice` storage key."""
    if len(key) != CHAIN_PRICE_KEY_LEN or not key.startswith(CHAIN_PRICE_PREFIX):
        raise ValueError(f"not an OperatorEpochSharePrice storage key: {_show(key, 100)}")
    p = KEY_PREFIX_LEN
    return (
        decode_le(key[p : p + 16], 8),
        decode_le(key[p + 16 : p + 24], 4),
        decode_le(key[p + 24 : p + 32], 4),
    )
