"""Zig-zag varints as bytes, written once for both wire formats that use them.

A Kafka record's fields (``varint``/``varlong`` in the v2 record format) and Avro's ``int`` and
``long`` are the same encoding: ``(n << 1) ^ (n >> 63)``, seven bits a byte, low bits first.
The record appender (:mod:`gateway.kafka.append`) and the compiled Avro writers
(:mod:`gateway.avro.writer`) take the small values from one table.
"""

from __future__ import annotations


def varint(value: int) -> bytes:
    """The zig-zag varint of ``value`` (any 64-bit int)."""
    v = (value << 1) ^ (value >> 63)
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


SMALL = 1 << 14
TABLE: tuple[bytes, ...] = tuple(varint(v) for v in range(SMALL))
"""Varints of 0 .. 16,383: lengths, counts, offset and timestamp deltas, small numbers."""


def encoded(value: int) -> bytes:
    """``varint(value)``, from the table when it is in it."""
    return TABLE[value] if 0 <= value < SMALL else varint(value)
