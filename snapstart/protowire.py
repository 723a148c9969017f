"""Protobuf's wire format, read by hand: for the few CRIU messages snapstart reads on
paths where importing protobuf and pycriu's generated modules would cost more than
the work (checkpoint/rpc.py: the restore RPC's answer; store/chunking.py: the
pagemap, mm and core images of a dump). Standard library only.

A message is a sequence of fields: a varint key ``number << 3 | wire type``, then
the value: 0 a varint, 1 eight bytes, 2 a varint length and that many bytes, 5 four
bytes (little-endian). Groups (3, 4) are not used by CRIU and are refused.
"""

from __future__ import annotations

from typing import Iterator

__all__ = ["VARINT", "I64", "LEN", "I32", "WireError", "read_varint", "fields"]

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(ValueError):
    """Truncated or malformed protobuf bytes."""


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it)."""
    n = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return n, pos
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one message: ints for varints and fixed-size
    fields (unsigned, little-endian), bytes for length-delimited ones."""
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = read_varint(buf, pos)
        num, wire = key >> 3, key & 7
        value: int | bytes
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
        elif wire == LEN:
            size, pos = read_varint(buf, pos)
            if pos + size > n:
                raise WireError(f"field {num} runs past the message")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            if pos + size > n:
                raise WireError(f"field {num} runs past the message")
            value, pos = int.from_bytes(buf[pos:pos + size], "little"), pos + size
        else:
            raise WireError(f"field {num}: unsupported wire type {wire}")
        yield num, wire, value
