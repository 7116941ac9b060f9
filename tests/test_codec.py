"""The decoders and the generator's encoders are inverses, and the decoders are strict."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shareprice.chain import codec

u128 = st.integers(min_value=0, max_value=codec.U128_MAX)
u64 = st.integers(min_value=0, max_value=codec.U64_MAX)
u32 = st.integers(min_value=0, max_value=codec.U32_MAX)


@given(u128)
def test_u128_round_trips_in_both_json_forms(value):
    encoded = codec.encode_u128(value)
    assert isinstance(encoded, int) == (value.bit_length() <= 52)
    assert codec.decode_u128(encoded) == value
    padded = codec.encode_u128_hex(value)
    assert len(padded) == 34
    assert codec.decode_u128(padded) == value


@given(u128)
def test_grouped_and_decimal_round_trip(value):
    grouped = codec.encode_grouped(value)
    assert codec.decode_grouped(grouped) == value
    assert codec.decode_decimal(str(value)) == value
    assert codec.decode_grouped(str(value)) == value  # plain digits are unambiguous too


@given(u64)
def test_operator_key_round_trips(operator_id):
    key = codec.encode_operator_key(operator_id)
    assert key.startswith("0x0b41d0c7f7b4485bd7be1d66066b00ad34a0a3fbf14e6c92456ca7bd91d59a57")
    assert len(key) == 82
    assert codec.decode_operator_key(key) == operator_id


@given(u64, u32, u32)
def test_chain_price_key_round_trips(operator_id, domain_id, domain_epoch):
    key = codec.encode_chain_price_key(operator_id, domain_id, domain_epoch)
    assert codec.decode_chain_price_key(key) == (operator_id, domain_id, domain_epoch)


def test_chain_price_key_matches_the_documented_example():
    key = codec.encode_chain_price_key(1, 0, 1535)
    assert key.endswith("f16a4d4929cfe61f4f6bf4153bb44d9d010000000000000000000000ff050000")


@given(st.text(max_size=40))
def test_decoders_raise_only_value_error_on_any_text(text):
    for decode in (codec.decode_u128, codec.decode_grouped, codec.decode_decimal):
        try:
            value = decode(text)
        except ValueError:
            continue
        assert 0 <= value <= codec.U128_MAX


@pytest.mark.parametrize(
    "raw",
    ["0x", "0xzz", "0x-1", "0x 1", "0x1_0", "1f", "0x" + "f" * 33, -1, 1.5, None, True, "0x٣"],
)
def test_decode_u128_rejects(raw):
    with pytest.raises(ValueError):
        codec.decode_u128(raw)


@pytest.mark.parametrize(
    "raw", ["", "1,23", "1234,567", "1,2345", ",123", "1,,234", "1,234,", "-1", "1.5", "١٢"]
)
def test_decode_grouped_rejects(raw):
    with pytest.raises(ValueError):
        codec.decode_grouped(raw)


def test_forty_digit_numbers_exceed_u128():
    forty = "1" + "0" * 39
    with pytest.raises(ValueError, match="exceeds u128"):
        codec.decode_decimal(forty)
    with pytest.raises(ValueError, match="exceeds u128"):
        codec.decode_grouped(codec.encode_grouped(int(forty)))
    with pytest.raises(ValueError, match="exceeds u128"):
        codec.decode_u128(int(forty))


@pytest.mark.parametrize(
    "key",
    [
        codec.encode_operator_key(1)[:-2],
        codec.encode_operator_key(1).replace("34a0a3fb", "34a0a3fc"),
        codec.encode_operator_key(1).replace("0b41d0c7", "0b41d0c8"),
        codec.encode_chain_price_key(1, 0, 5),
        codec.encode_operator_key(1)[:-2] + "zz",
        codec.encode_operator_key(1)[:-2] + " 1",
    ],
)
def test_decode_operator_key_rejects(key):
    with pytest.raises(ValueError):
        codec.decode_operator_key(key)
