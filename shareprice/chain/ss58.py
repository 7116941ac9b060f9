"""SS58 addresses, both ways: how people write the 32-byte accounts the storage keys hold.

Autonomys uses network prefix 6094, written in SS58's two-byte form (0x73 0x97), so mainnet
addresses start with `su`. An address is base58(prefix + account + checksum), the checksum being
the first two bytes of blake2b-512("SS58PRE" + prefix + account). Decoding checks the prefix and
the checksum: a mistyped address is refused with a reason, never taken for another account.
"""

from __future__ import annotations

import hashlib

AUTONOMYS_PREFIX = 6094
_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_CONTEXT = b"SS58PRE"
ACCOUNT_BYTES = 32


def _prefix_bytes(prefix: int) -> bytes:
    if 0 <= prefix < 64:
        return bytes([prefix])
    if 64 <= prefix < 16384:
        first = ((prefix & 0b1111_1100) >> 2) | 0b0100_0000
        second = (prefix >> 8) | ((prefix & 0b11) << 6)
        return bytes([first, second])
    raise ValueError(f"SS58 prefix {prefix} out of range")


def _checksum(payload: bytes) -> bytes:
    return hashlib.blake2b(_CONTEXT + payload, digest_size=64).digest()[:2]


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rest = divmod(number, 58)
        digits.append(_ALPHABET[rest])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        if char not in _INDEX:
            raise ValueError(f"{char!r} is not a base58 character")
        number = number * 58 + _INDEX[char]
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + body


def _network_of(raw: bytes) -> tuple[int, int]:
    """(network prefix, bytes it takes) from the start of a decoded address."""
    if not raw:
        raise ValueError("not an SS58 address")
    if raw[0] < 64:
        return raw[0], 1
    if raw[0] < 128 and len(raw) > 1:
        lower = ((raw[0] & 0b0011_1111) << 2) | (raw[1] >> 6)
        return lower | ((raw[1] & 0b0011_1111) << 8), 2
    raise ValueError("not an SS58 address (reserved prefix byte)")


def encode(account: bytes, prefix: int = AUTONOMYS_PREFIX) -> str:
    """The SS58 address of a 32-byte account."""
    if len(account) != ACCOUNT_BYTES:
        raise ValueError(f"an account is {ACCOUNT_BYTES} bytes, not {len(account)}")
    payload = _prefix_bytes(prefix) + account
    return _b58encode(payload + _checksum(payload))


def decode(address: str, prefix: int = AUTONOMYS_PREFIX) -> bytes:
    """The 32-byte account of an SS58 address of network `prefix` (ValueError with a reason)."""
    if not address or len(address) > 64 or not address.isascii():
        raise ValueError("not an SS58 address")
    raw = _b58decode(address)
    network, head_len = _network_of(raw)
    if len(raw) != head_len + ACCOUNT_BYTES + 2:
        raise ValueError("not an SS58 address of a 32-byte account")
    if network != prefix:
        raise ValueError(
            f"an address of network {network}, not {prefix} (Autonomys addresses start 'su')"
        )
    payload, checksum = raw[:-2], raw[-2:]
    if _checksum(payload) != checksum:
        raise ValueError("the address's checksum does not match (a typo?)")
    return payload[head_len:]


def parse_account(text: str) -> bytes:
    """An account from what a person types: an SS58 address or 0x + 64 hex digits."""
    text = text.strip()
    if text[:2] in ("0x", "0X"):
        digits = text[2:]
        if len(digits) != 2 * ACCOUNT_BYTES or not digits.isascii():
            raise ValueError("a hex account is 0x followed by 64 hex digits")
        try:
            return bytes.fromhex(digits)
        except ValueError:
            raise ValueError("a hex account is 0x followed by 64 hex digits") from None
    return decode(text)
