"""Avro binary writers compiled from a schema: one generated Python function per schema.

fastavro's ``schemaless_writer`` costs ~7 us for a ten-field delivery receipt, most of it the
per-call set-up around its C loop; a straight-line function (one type check and one append per
field, lengths and small numbers from the varint table of :mod:`gateway.varint`) writes the
same bytes in ~3 us (an escalation: ~15 -> ~8 us). Every
escalation the router builds and every receipt a deliverer writes is encoded once, so
:func:`compile_writer` is on both hot paths.

The compiled writer takes only records it can write exactly as fastavro would: every value of
the type its field declares (``str`` for a string, ``int`` but not ``bool`` for an int or a
long, within range, ``float`` for a float or a double, ``bytes`` for bytes and fixed of the
right size, a ``list`` or ``tuple`` for an array, a known symbol for an enum, ``None`` or the
other branch for a two-branch union with ``null``) and every field present. Anything else
raises inside it and the codec hands the record to fastavro, which then writes it (a missing
field with a default, a union branch chosen by fastavro's own rules) or refuses it with its
own message: for any record the result is fastavro's. Schemas with what is not compiled
(maps, unions of two or more non-null branches, recursive types) get ``None``: fastavro writes
them. Names never enter the generated source (field names are ``repr`` literals, symbols are
bound values), so a schema cannot inject code.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from gateway.avro.codegen import PRIMITIVES, Codegen, Unsupported
from gateway.varint import SMALL, TABLE, varint

Writer = Callable[[Mapping[str, Any]], bytes]
"""``writer(record) -> body``: the record's Avro binary encoding (no framing)."""

_INT = (-(2**31), 2**31 - 1)
_LONG = (-(2**63), 2**63 - 1)


class Slow(Exception):
    """The record is not one the compiled writer takes as is: fastavro decides."""


class _Compiler(Codegen):
    def __init__(self) -> None:
        super().__init__(
            {
                "_Slow": Slow,
                "_V": varint,
                "_S": TABLE,
                "_FLOAT": struct.Struct("<f").pack,
                "_DOUBLE": struct.Struct("<d").pack,
            }
        )

    def number(self, indent: int, value: str, bounds: tuple[int, int]) -> None:
        low, high = bounds
        self.emit(indent, f"if type({value}) is not int or not {low} <= {value} <= {high}:")
        self.emit(indent + 1, "raise _Slow")
        self.emit(indent, f"a(_S[{value}] if 0 <= {value} < {SMALL} else _V({value}))")

    def write(self, indent: int, schema: Any, value: str) -> None:
        schema = self.resolve(schema)
        if isinstance(schema, list):
            self.union(indent, schema, value)
            return
        if isinstance(schema, str):
            self.primitive(indent, schema, value)
            return
        kind = schema["type"]
        if kind in PRIMITIVES:
            self.primitive(indent, kind, value)
        elif kind == "record":
            self.record(indent, schema, value)
        elif kind == "enum":
            self.register(schema)
            symbols = self.var("SYM")
            self.env[symbols] = {s: varint(i) for i, s in enumerate(schema["symbols"])}
            index = self.var("i")
            self.emit(indent, f"{index} = {symbols}.get({value}) if type({value}) is str else None")
            self.emit(indent, f"if {index} is None:")
            self.emit(indent + 1, "raise _Slow")
            self.emit(indent, f"a({index})")
        elif kind == "fixed":
            self.register(schema)
            size = int(schema["size"])
            self.emit(indent, f"if type({value}) is not bytes or len({value}) != {size}:")
            self.emit(indent + 1, "raise _Slow")
            self.emit(indent, f"a({value})")
        elif kind == "array":
            self.array(indent, schema["items"], value)
        else:
            raise Unsupported(kind)

    def primitive(self, indent: int, kind: str, value: str) -> None:
        if kind == "null":
            self.emit(indent, f"if {value} is not None:")
            self.emit(indent + 1, "raise _Slow")
        elif kind == "boolean":
            self.emit(indent, f"if {value} is True:")
            self.emit(indent + 1, "a(b'\\x01')")
            self.emit(indent, f"elif {value} is False:")
            self.emit(indent + 1, "a(b'\\x00')")
            self.emit(indent, "else:")
            self.emit(indent + 1, "raise _Slow")
        elif kind in ("int", "long"):
            self.number(indent, value, _INT if kind == "int" else _LONG)
        elif kind in ("float", "double"):
            self.emit(indent, f"if type({value}) is not float:")
            self.emit(indent + 1, "raise _Slow")
            self.emit(indent, f"a({'_FLOAT' if kind == 'float' else '_DOUBLE'}({value}))")
        else:  # string, bytes
            data = self.var("d")
            if kind == "string":
                self.emit(indent, f"if type({value}) is not str:")
                self.emit(indent + 1, "raise _Slow")
                self.emit(indent, f"{data} = {value}.encode()")
            else:
                self.emit(indent, f"if type({value}) is not bytes:")
                self.emit(indent + 1, "raise _Slow")
                self.emit(indent, f"{data} = {value}")
            size = self.var("n")
            self.emit(indent, f"{size} = len({data})")
            self.emit(indent, f"a(_S[{size}] if {size} < {SMALL} else _V({size}))")
            self.emit(indent, f"a({data})")

    def record(self, indent: int, schema: dict[str, Any], value: str) -> None:
        name = self.enter(schema)
        for field in schema["fields"]:
            item = self.var("f")
            self.emit(indent, f"{item} = {value}[{field['name']!r}]")
            self.write(indent, field["type"], item)
        self.leave(name)

    def union(self, indent: int, branches: list[Any], value: str) -> None:
        others = [i for i, b in enumerate(branches) if b != "null"]
        nulls = [i for i, b in enumerate(branches) if b == "null"]
        if len(others) > 1:
            raise Unsupported("union of two or more non-null branches")
        if nulls:
            self.emit(indent, f"if {value} is None:")
            self.emit(indent + 1, f"a({varint(nulls[0])!r})")
            if not others:
                self.emit(indent, "else:")
                self.emit(indent + 1, "raise _Slow")
                return
            self.emit(indent, "else:")
            indent += 1
        self.emit(indent, f"a({varint(others[0])!r})")
        self.write(indent, branches[others[0]], value)

    def array(self, indent: int, items: Any, value: str) -> None:
        # one block holding every item, then the closing 0 (fastavro's layout)
        item = self.var("x")
        self.emit(indent, f"if type({value}) is not list and type({value}) is not tuple:")
        self.emit(indent + 1, "raise _Slow")
        self.emit(indent, f"if {value}:")
        count = self.var("n")
        self.emit(indent + 1, f"{count} = len({value})")
        self.emit(indent + 1, f"a(_S[{count}] if {count} < {SMALL} else _V({count}))")
        self.emit(indent + 1, f"for {item} in {value}:")
        self.write(indent + 2, items, item)
        self.emit(indent, "a(b'\\x00')")


def compile_writer(schema: dict[str, Any]) -> Writer | None:
    """A writer of records of ``schema`` (parsed by fastavro, logical types stripped), or
    ``None`` when the schema uses what is not compiled (see the module doc)."""
    compiler = _Compiler()
    compiler.emit(0, "def write(r):")
    compiler.emit(1, "out = []")
    compiler.emit(1, "a = out.append")
    try:
        compiler.write(1, schema, "r")
    except Unsupported:
        return None
    compiler.emit(1, "return b''.join(out)")
    writer: Writer = compiler.build("write", "<avro-writer>")
    return writer


__all__ = ["Slow", "Writer", "compile_writer"]
