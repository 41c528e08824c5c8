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


def header(number: int, size: int) -> bytes:
    """The tag and length of a length-delimited field whose payload is `size` bytes."""
    return varint((number << 3) | 2) + varint(size)


class Chunks:
    """A message as a list of byte strings and their total length: wrapping it in a field adds
    one header piece instead of copying megabytes per level; join once at the end."""

    __slots__ = ("parts", "size")

    def __init__(self, *parts: bytes) -> None:
        self.parts = list(parts)
        self.size = sum(map(len, parts))

    def extend(self, parts: list[bytes], size: int | None = None) -> Chunks:
        """Add parts; pass their total `size` when it is known, to skip counting them."""
        self.parts.extend(parts)
        self.size += sum(map(len, parts)) if size is None else size
        return self

    def add_field(self, number: int, inner: Chunks) -> Chunks:
        head = header(number, inner.size)
        self.parts.append(head)
        self.parts.extend(inner.parts)
        self.size += len(head) + inner.size
        return self

    def join(self) -> bytes:
        return b"".join(self.parts)
