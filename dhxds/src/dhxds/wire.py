"""Protobuf wire format by hand, for assembling messages from pre-encoded parts: a repeated or
map field serializes as the concatenation of its entries, so a message holding thousands of
cached entries is joined, not re-serialized."""

from __future__ import annotations

_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (tag, length, bytes)."""
    return varint((number << 3) | 2) + varint(len(payload)) + payload


def varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
