"""Avro binary readers compiled from a writer schema: one generated Python function per schema.

fastavro's reader interprets the schema for every record (a type dispatch per field); for the
router, which decodes every complaint, that was the largest single cost. :func:`compile_reader`
turns a schema into straight-line code instead (one assignment per field, a varint fast path
inlined), ~1.5x faster on a complaint, with the same result as fastavro (property-tested).

Only what the gateway's own schemas need is compiled: records, enums, unions, fixed, arrays
(the escalation's ``severity``) and the primitive types. An array's block count is refused
before its items are read when it exceeds the bytes left (each item takes at least one byte; an
array of items that may take none is not compiled), so the work stays bounded by the message's
size. A schema with maps or a recursive type gets ``None`` and the codec keeps using fastavro,
whose decode-cost protections cover them. Names never enter
the generated source (field names are ``repr`` literals, symbols are bound values), so a schema
cannot inject code. Malformed input raises :class:`AvroReadError`, ``IndexError`` or
``struct.error`` (truncated inside a number) or ``UnicodeDecodeError``; the codec turns each
into a typed ``DecodeError``.

Where it is built (``gateway/avro/_readvm.c``, an optional extension: setup.py), the same walk
of the schema becomes a program of nested tuples that a compiled reader runs instead, another
~3.5x faster on a complaint (8.4 -> 2.4 us; 9.2 -> 3.1 us at 1 KB), with the same results and
the same failures, raised as the same types with the same reasons. It is used only after it
read a probe (every type, every truncation, each malformation) exactly as the generated reader
did; ``GC_PURE_AVRO=1`` keeps the generated one.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any, cast

from gateway.avro.codegen import PRIMITIVES, Codegen, Unsupported
from gateway.compiled import optional
from gateway.varint import varint

Reader = Callable[[bytes, int], tuple[dict[str, Any], int]]
"""``reader(buffer, start) -> (record, end)``: ``end`` is the offset after the record."""

log = logging.getLogger(__name__)
_MAX_VARINT_SHIFT = 63
_FIXED_WIDTH = {"float": 4, "double": 8}


class AvroReadError(ValueError):
    """Bytes that are not a valid encoding of the schema (``reason`` is a stable slug)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _varint(b: bytes, p: int) -> tuple[int, int]:
    """A zig-zag varint's raw (unsigned) value and the offset after it; multi-byte path."""
    acc = 0
    shift = 0
    while True:
        n = b[p]
        p += 1
        acc |= (n & 0x7F) << shift
        if n < 0x80:
            return acc, p
        shift += 7
        if shift > _MAX_VARINT_SHIFT:
            raise AvroReadError("varint_too_long")


class _Compiler(Codegen):
    def __init__(self) -> None:
        super().__init__(
            {
                "_varint": _varint,
                "_Err": AvroReadError,
                "_BOOL": (False, True),
                "_FLOAT": struct.Struct("<f").unpack_from,
                "_DOUBLE": struct.Struct("<d").unpack_from,
            }
        )
        self.sizing: set[Any] = set()

    def long(self, indent: int, target: str) -> None:
        # one- and two-byte varints inline (small ints, enum and union indexes, lengths of
        # strings up to 8 KiB); longer ones (timestamps, amounts) through _varint
        self.emit(indent, f"{target} = b[p]")
        self.emit(indent, f"if {target} < 128:")
        self.emit(indent + 1, "p += 1")
        self.emit(indent, "elif b[p + 1] < 128:")
        self.emit(indent + 1, f"{target} = ({target} & 127) | (b[p + 1] << 7)")
        self.emit(indent + 1, "p += 2")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"{target}, p = _varint(b, p)")
        self.emit(indent, f"{target} = ({target} >> 1) ^ -({target} & 1)")

    def read(self, indent: int, schema: Any, target: str) -> None:
        schema = self.resolve(schema)
        if isinstance(schema, list):
            self.union(indent, schema, target)
            return
        if isinstance(schema, str):
            self.primitive(indent, schema, target)
            return
        kind = schema["type"]
        if kind in PRIMITIVES:
            self.primitive(indent, kind, target)
        elif kind == "record":
            self.record(indent, schema, target)
        elif kind == "enum":
            self.register(schema)
            symbols = self.var("SYMBOLS")
            self.env[symbols] = tuple(schema["symbols"])
            index = self.var("i")
            self.long(indent, index)
            self.emit(indent, f"if not 0 <= {index} < {len(schema['symbols'])}:")
            self.emit(indent + 1, "raise _Err('bad_index')")
            self.emit(indent, f"{target} = {symbols}[{index}]")
        elif kind == "fixed":
            self.register(schema)
            size = int(schema["size"])
            self.emit(indent, f"if p + {size} > end:")
            self.emit(indent + 1, "raise _Err('truncated')")
            self.emit(indent, f"{target} = b[p:p + {size}]")
            self.emit(indent, f"p += {size}")
        elif kind == "array":
            self.array(indent, schema["items"], target)
        else:
            raise Unsupported(kind)

    def array(self, indent: int, items: Any, target: str) -> None:
        # Blocks of items, each a count (negative: its byte size follows), until a count of 0.
        # Every item takes at least one byte, so a count over the bytes left is refused before
        # any item is read: a small message can never make the loop long.
        if self.width(items) < 1:
            raise Unsupported("array of items that may take no bytes")
        out, count, size, item = self.var("a"), self.var("c"), self.var("s"), self.var("x")
        self.emit(indent, f"{out} = []")
        self.emit(indent, "while True:")
        self.long(indent + 1, count)
        self.emit(indent + 1, f"if {count} == 0:")
        self.emit(indent + 2, "break")
        self.emit(indent + 1, f"if {count} < 0:")
        self.emit(indent + 2, f"{count} = -{count}")
        self.long(indent + 2, size)
        self.emit(indent + 1, f"if {count} > end - p:")
        self.emit(indent + 2, "raise _Err('truncated')")
        self.emit(indent + 1, f"for _ in range({count}):")
        self.read(indent + 2, items, item)
        self.emit(indent + 2, f"{out}.append({item})")
        self.emit(indent, f"{target} = {out}")

    def width(self, schema: Any) -> int:
        """The fewest bytes a value of ``schema`` can be encoded in."""
        schema = self.resolve(schema)
        if isinstance(schema, list):
            return 1
        if isinstance(schema, str):
            return 0 if schema == "null" else _FIXED_WIDTH.get(schema, 1)
        kind = schema["type"]
        if kind == "record":
            name = schema.get("name")
            if name in self.sizing:
                raise Unsupported(f"recursive type {name}")
            self.sizing.add(name)
            try:
                return sum(self.width(f["type"]) for f in schema["fields"])
            finally:
                self.sizing.discard(name)
        if kind == "fixed":
            return int(schema["size"])
        return self.width(kind) if kind in PRIMITIVES else 1  # enum, array, map

    def primitive(self, indent: int, kind: str, target: str) -> None:
        if kind == "null":
            self.emit(indent, f"{target} = None")
        elif kind == "boolean":
            self.emit(indent, f"{target} = b[p]")
            self.emit(indent, f"if {target} > 1:")
            self.emit(indent + 1, "raise _Err('bad_boolean')")
            self.emit(indent, f"{target} = _BOOL[{target}]")
            self.emit(indent, "p += 1")
        elif kind in ("int", "long"):
            self.long(indent, target)
        elif kind == "float":
            self.emit(indent, f"{target} = _FLOAT(b, p)[0]")
            self.emit(indent, "p += 4")
        elif kind == "double":
            self.emit(indent, f"{target} = _DOUBLE(b, p)[0]")
            self.emit(indent, "p += 8")
        else:  # string, bytes
            size = self.var("n")
            self.long(indent, size)
            self.emit(indent, f"if {size} < 0:")
            self.emit(indent + 1, "raise _Err('negative_length')")
            self.emit(indent, f"if p + {size} > end:")
            self.emit(indent + 1, "raise _Err('truncated')")
            value = f"b[p:p + {size}]"
            self.emit(
                indent,
                f"{target} = {value}.decode()" if kind == "string" else f"{target} = {value}",
            )
            self.emit(indent, f"p += {size}")

    def record(self, indent: int, schema: dict[str, Any], target: str) -> None:
        name = self.enter(schema)
        values = []
        for field in schema["fields"]:
            value = self.var("f")
            self.read(indent, field["type"], value)
            values.append(f"{field['name']!r}: {value}")
        self.emit(indent, f"{target} = {{{', '.join(values)}}}")
        self.leave(name)

    def union(self, indent: int, branches: list[Any], target: str) -> None:
        index = self.var("u")
        self.long(indent, index)
        for i, branch in enumerate(branches):
            self.emit(indent, f"{'if' if i == 0 else 'elif'} {index} == {i}:")
            self.read(indent + 1, branch, target)
        self.emit(indent, "else:")
        self.emit(indent + 1, "raise _Err('bad_index')")


class _Programmer(_Compiler):
    """The generated reader's walk of a schema, as the compiled reader's program: nested tuples
    of the op codes of ``gateway/avro/_readvm.c`` (its header comment)."""

    def __init__(self, vm: Any) -> None:
        super().__init__()
        self.vm = vm
        self.ops = {
            "null": vm.NULL,
            "boolean": vm.BOOLEAN,
            "int": vm.LONG,
            "long": vm.LONG,
            "float": vm.FLOAT,
            "double": vm.DOUBLE,
            "string": vm.STRING,
            "bytes": vm.BYTES,
        }

    def node(self, schema: Any) -> tuple[Any, ...]:
        vm = self.vm
        schema = self.resolve(schema)
        if isinstance(schema, list):
            return (vm.UNION, tuple(self.node(branch) for branch in schema))
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind in PRIMITIVES:
            return (self.ops[kind],)
        if kind == "record":
            name = self.enter(schema)
            fields = schema["fields"]
            names = tuple(field["name"] for field in fields)
            node = (vm.RECORD, names, tuple(self.node(field["type"]) for field in fields))
            self.leave(name)
            return node
        if kind == "enum":
            self.register(schema)
            return (vm.ENUM, tuple(schema["symbols"]))
        if kind == "fixed":
            self.register(schema)
            return (vm.FIXED, int(schema["size"]))
        if kind == "array":
            if self.width(schema["items"]) < 1:
                raise Unsupported("array of items that may take no bytes")
            return (vm.ARRAY, self.node(schema["items"]))
        raise Unsupported(kind)


_PROBE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Probe",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "big", "type": "long"},
        {"name": "ratio", "type": "float"},
        {"name": "precise", "type": "double"},
        {"name": "text", "type": "string"},
        {"name": "blob", "type": "bytes"},
        {"name": "nothing", "type": "null"},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["R", "G"]}},
        {"name": "tag", "type": {"type": "fixed", "name": "Tag", "size": 3}},
        {"name": "maybe", "type": ["null", "string", "Colour"]},
        {"name": "counts", "type": {"type": "array", "items": "long"}},
        {
            "name": "inner",
            "type": {"type": "record", "name": "Inner", "fields": [{"name": "n", "type": "int"}]},
        },
    ],
}
_PROBE_BIG = varint(-(1 << 62))
_PROBE = b"".join(
    [
        b"\x01",
        _PROBE_BIG,
        struct.pack("<f", 1.5),
        struct.pack("<d", -2.25),
        varint(len("投诉".encode())),
        "投诉".encode(),
        varint(2),
        b"\x00\xff",
        varint(1),
        b"abc",
        varint(1),
        varint(1),
        b"x",
        varint(-2),  # a block of 2 with its byte size
        varint(2),
        varint(7),
        varint(-8),
        varint(0),
        varint(300),
    ]
)
_PROBES = [
    _PROBE,
    *(_PROBE[:n] for n in range(len(_PROBE))),
    _PROBE[:1] + b"\xff" * 11,  # a varint over ten bytes
    _PROBE[:1] + b"\xff" * 9 + b"\x7f" + _PROBE[1 + len(_PROBE_BIG) :],  # a 70-bit long
    _PROBE.replace("投诉".encode(), b"\xe6\x8a\xff\xe8\xaf\x89"),  # not UTF-8
    b"\x02" + _PROBE[1:],  # a boolean that is not 0 or 1
]


def _outcome(read: Reader, data: bytes) -> Any:
    try:
        return read(data, 0)
    except AvroReadError as exc:
        return ("AvroReadError", exc.reason)
    except Exception as exc:  # the probe compares what each reader raises
        return (type(exc).__name__, str(exc) if isinstance(exc, UnicodeDecodeError) else "")


def _python_reader(schema: dict[str, Any]) -> Reader | None:
    compiler = _Compiler()
    compiler.emit(0, "def read(b, p):")
    compiler.emit(1, "end = len(b)")
    try:
        compiler.read(1, schema, "out")
    except Unsupported:
        return None
    compiler.emit(1, "return out, p")
    reader: Reader = compiler.build("read", "<avro-reader>")
    return reader


def _vm_reader(vm: Any, schema: dict[str, Any]) -> Reader | None:
    """The compiled reader of ``schema``, or ``None`` where it does not take it (what is not
    compiled, or types nested deeper than its 64 levels: the generated reader reads those)."""
    try:
        program = _Programmer(vm).node(schema)
        reader: Reader = vm.Reader(program, AvroReadError, struct.error)
    except (Unsupported, ValueError, RecursionError):
        return None
    return reader


def _load_vm() -> Any:
    """The compiled reader (``gateway.avro._readvm``) if built and it reads the probe (every
    type, every truncation, each malformation) exactly as the generated Python reader does."""
    vm = optional("gateway.avro._readvm", "GC_PURE_AVRO")
    if vm is None:
        return None
    try:
        from fastavro import parse_schema

        schema = cast(dict[str, Any], parse_schema(_PROBE_SCHEMA, _write_hint=False))
        python, compiled = _python_reader(schema), _vm_reader(vm, schema)
        agrees = (
            python is not None
            and compiled is not None
            and all(_outcome(python, d) == _outcome(compiled, d) for d in _PROBES)
        )
    except Exception:  # a broken accelerator: the Python reader
        log.warning("the compiled Avro reader failed its probe: reading in Python", exc_info=True)
        return None
    if not agrees:
        log.warning("the compiled Avro reader disagrees with the Python one: reading in Python")
        return None
    return vm


_VM = _load_vm()


def compile_reader(schema: dict[str, Any], *, pure: bool = False) -> Reader | None:
    """A reader for records written with ``schema`` (parsed by fastavro, logical types
    stripped), or ``None`` when the schema uses what is not compiled (maps, recursion, arrays of
    items that may take no bytes). The compiled one (``gateway/avro/_readvm.c``) where it is
    built and passed its probe, unless ``pure``; else the generated Python one.
    """
    if not pure and _VM is not None:
        compiled = _vm_reader(_VM, schema)  # None: the generated reader (or None) instead
        if compiled is not None:
            return compiled
    return _python_reader(schema)


def accelerated() -> bool:
    """Whether :func:`compile_reader` gives the compiled reader."""
    return _VM is not None


__all__ = ["AvroReadError", "Reader", "accelerated", "compile_reader"]
