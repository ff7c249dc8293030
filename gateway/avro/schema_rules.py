"""What an Avro schema must satisfy: BACKWARD compatibility and a bounded decode cost.

Both checks work on schemas as parsed by ``fastavro.parse_schema`` (named types are full names,
``__named_schemas`` holds their definitions) and return a list of human-readable problems; an
empty list means the schema passes.

* :func:`check_backward` (new reader, old writer) = :func:`backward_problems`, a structural
  check following the Avro resolution rules (fields the reader adds need a default, enum symbols
  it drops need an enum default, type changes must be promotions), plus
  :func:`resolution_problems`, which really encodes sample records with the writer schema and
  reads them back through fastavro with the reader schema.
* :func:`decode_cost_problems` rejects writer schemas that let a few bytes cost a lot of work:
  recursive types, array items that can be encoded in zero bytes (``null``, empty records,
  ``fixed`` of size 0: a 6-byte message could declare 30 million of them), and types whose
  decode work per input byte is too high. With every array item costing at least one byte and at
  most :data:`MAX_WORK_PER_BYTE` steps per byte, decoding is linear in the (capped) message size.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
PROMOTIONS = frozenset(
    {
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    }
)
MIN_WIDTH = {
    "null": 0,
    "boolean": 1,
    "int": 1,
    "long": 1,
    "float": 4,
    "double": 8,
    "bytes": 1,
    "string": 1,
    "enum": 1,
    "array": 1,
    "map": 1,
}
MAX_WORK_PER_BYTE = 64
"""Decode steps one byte of an array item (or map value) may cost."""
MAX_SCHEMA_WORK = 100_000
"""Decode steps a record may cost before any array or map is counted (schema size bound)."""

Schema = Any
Named = dict[str, Any]


def named_of(schema: Schema) -> Named:
    """The named types of a parsed schema (full name -> definition)."""
    if isinstance(schema, dict):
        named = schema.get("__named_schemas")
        if isinstance(named, dict):
            return named
    return {}


def _deref(schema: Schema, named: Named) -> Schema:
    while isinstance(schema, str) and schema not in PRIMITIVES:
        if schema not in named:
            raise ValueError(f"unknown type {schema!r}")
        schema = named[schema]
    if isinstance(schema, dict) and schema.get("type") in PRIMITIVES:
        return schema["type"]
    return schema


def type_of(schema: Schema) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _names_match(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    aliases = {_short(a) for a in reader.get("aliases", [])} | set(reader.get("aliases", []))
    w_name = str(writer["name"])
    return _short(reader["name"]) == _short(w_name) or bool({w_name, _short(w_name)} & aliases)


# --- BACKWARD compatibility ----------------------------------------------------------------


def backward_problems(reader: Schema, writer: Schema) -> list[str]:
    """Structural BACKWARD check: can ``reader`` read everything ``writer`` wrote?"""
    check = _Backward(named_of(reader), named_of(writer))
    check.compat(reader, writer, "$")
    return check.problems


class _Backward:
    """The Avro schema-resolution rules, applied to types instead of data."""

    def __init__(self, reader_named: Named, writer_named: Named) -> None:
        self.rn = reader_named
        self.wn = writer_named
        self.problems: list[str] = []
        self._seen: set[tuple[int, int]] = set()

    def _bad(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def matches(self, reader: Schema, writer: Schema) -> bool:
        """Would a reader union pick this branch for the writer's type (Avro spec)?"""
        r, w = _deref(reader, self.rn), _deref(writer, self.wn)
        tr, tw = type_of(r), type_of(w)
        if "union" in (tr, tw):
            return False
        if tr != tw:
            return (tw, tr) in PROMOTIONS
        return tr not in ("record", "enum", "fixed") or _names_match(r, w)

    def compat(self, reader: Schema, writer: Schema, path: str) -> None:
        r, w = _deref(reader, self.rn), _deref(writer, self.wn)
        tr, tw = type_of(r), type_of(w)
        if tw == "union":
            for i, branch in enumerate(w):
                self.compat(r, branch, f"{path}<branch {i}>")
        elif tr == "union":
            branch = next((b for b in r if self.matches(b, w)), None)
            if branch is None:
                self._bad(path, f"writer type {tw} matches no branch of the reader union")
            else:
                self.compat(branch, w, path)
        elif tr != tw:
            if (tw, tr) not in PROMOTIONS:
                self._bad(path, f"type changed from {tw} to {tr} (not a promotion)")
        elif tr in ("record", "enum", "fixed"):
            self._named(r, w, path)
        elif tr == "array":
            self.compat(r["items"], w["items"], f"{path}[]")
        elif tr == "map":
            self.compat(r["values"], w["values"], f"{path}{{}}")

    def _named(self, r: dict[str, Any], w: dict[str, Any], path: str) -> None:
        kind = r["type"]
        if not _names_match(r, w):
            self._bad(path, f"{kind} renamed from {w['name']} to {r['name']} (no alias)")
            return
        if (id(r), id(w)) in self._seen:
            return
        self._seen.add((id(r), id(w)))
        if kind == "record":
            self._record(r, w, path)
        elif kind == "enum":
            dropped = [s for s in w["symbols"] if s not in r["symbols"]]
            if dropped and "default" not in r:
                self._bad(path, f"enum {r['name']} dropped {dropped} and has no default")
        elif r["size"] != w["size"]:
            self._bad(path, f"fixed {r['name']} size changed {w['size']} -> {r['size']}")

    def _record(self, r: dict[str, Any], w: dict[str, Any], path: str) -> None:
        by_name = {f["name"]: f for f in w["fields"]}
        for field in r["fields"]:
            names = [field["name"], *field.get("aliases", [])]
            match = next((by_name[n] for n in names if n in by_name), None)
            where = f"{path}.{field['name']}"
            if match is not None:
                self.compat(field["type"], match["type"], where)
            elif "default" not in field:
                self._bad(where, "new field without a default")


def strip_logical_types(raw: Any) -> Any:
    """A deep copy of a raw (JSON) schema without ``logicalType`` annotations."""
    if isinstance(raw, dict):
        return {k: strip_logical_types(v) for k, v in raw.items() if k != "logicalType"}
    if isinstance(raw, list):
        return [strip_logical_types(v) for v in raw]
    return raw


def resolution_problems(reader_raw: Any, writer_raw: Any, count: int = 40) -> list[str]:
    """Encode ``count`` sample records with the writer and read them with the reader (fastavro)."""
    problems: list[str] = []
    writer = parse_schema(strip_logical_types(writer_raw))
    reader = parse_schema(strip_logical_types(reader_raw))
    for i, sample in enumerate(sample_values(writer, count)):
        buf = io.BytesIO()
        try:
            schemaless_writer(buf, writer, sample)
            data = buf.getvalue()
            src = io.BytesIO(data)
            schemaless_reader(src, writer, reader)
            if src.tell() != len(data):
                problems.append(f"sample {i}: {len(data) - src.tell()} bytes left unread")
        except Exception as exc:
            problems.append(f"sample {i}: {type(exc).__name__}: {exc}")
    return problems


def check_backward(reader_raw: Any, writer_raw: Any) -> list[str]:
    """Structural and trial BACKWARD check of two raw (JSON) schemas; [] when compatible."""
    try:
        reader = parse_schema(copy.deepcopy(reader_raw))
        writer = parse_schema(copy.deepcopy(writer_raw))
    except Exception as exc:
        return [f"invalid schema: {type(exc).__name__}: {exc}"]
    problems = backward_problems(reader, writer)
    if not problems:
        problems = resolution_problems(reader_raw, writer_raw)
    return problems


# --- sample records ------------------------------------------------------------------------


_TEXT = ["", "a", "投诉", "北京市朝阳区", "x" * 40, "退款未到账，商家拒绝处理", "ünïcødé ✓"]


def sample_values(schema: Schema, count: int) -> Iterator[Any]:
    """``count`` deterministic values of a parsed schema that, together, use every enum symbol,
    every union branch and empty, one- and two-item arrays and maps."""
    named = named_of(schema)
    for i in range(count):
        yield _sample(schema, named, i, 0, [0])


def _sample(schema: Schema, named: Named, i: int, depth: int, pos: list[int]) -> Any:  # noqa: PLR0911
    s = _deref(schema, named)
    t = type_of(s)
    pos[0] += 1
    k = i + pos[0]  # varies choices between positions and between samples
    if t == "union":
        options = [b for b in s if depth < 8 or type_of(_deref(b, named)) in PRIMITIVES] or s
        choice = options[(i if i < len(options) else k) % len(options)]
        return _sample(choice, named, i, depth + 1, pos)
    if t == "record":
        return {f["name"]: _sample(f["type"], named, i, depth + 1, pos) for f in s["fields"]}
    if t == "enum":
        return s["symbols"][(i if i < len(s["symbols"]) else k) % len(s["symbols"])]
    if t == "array":
        items = range(k % 3 if depth < 8 else 0)
        return [_sample(s["items"], named, i + j, depth + 1, pos) for j in items]
    if t == "map":
        return {
            f"k{j}": _sample(s["values"], named, i + j, depth + 1, pos)
            for j in range(k % 3 if depth < 8 else 0)
        }
    if t == "fixed":
        return bytes((k + j) % 256 for j in range(s["size"]))
    return _primitive(t, k)


def _primitive(t: str, k: int) -> Any:
    values: dict[str, Any] = {
        "null": None,
        "boolean": k % 2 == 0,
        "int": [0, 1, -1, 2**31 - 1, -(2**31), 1_718_000_000][k % 6],
        "long": [0, -1, 2**63 - 1, -(2**63), 1_718_000_000_000][k % 5],
        "float": [0.0, 1.5, -2.25][k % 3],
        "double": [0.0, 3.141592653589793, -1e300][k % 3],
        "bytes": _TEXT[k % len(_TEXT)].encode(),
        "string": _TEXT[k % len(_TEXT)],
    }
    return values[t]


# --- decode cost ---------------------------------------------------------------------------


def decode_cost_problems(schema: Schema) -> list[str]:
    """Reasons a *writer* schema could make a small message expensive to decode; [] when safe."""
    problems: list[str] = []
    named = named_of(schema)
    try:
        work = _Cost(named, problems).work(schema, ())
    except RecursionError:
        return ["schema nests too deeply"]
    if work > MAX_SCHEMA_WORK:
        problems.append(f"a record costs {work} decode steps (> {MAX_SCHEMA_WORK})")
    return problems


class _Cost:
    """Minimum encoded width and maximum decode work (array/map items excluded) of types."""

    def __init__(self, named: Named, problems: list[str]) -> None:
        self.named = named
        self.problems = problems
        self._width: dict[str, int] = {}
        self._work: dict[str, int] = {}

    def width(self, schema: Schema) -> int:
        if isinstance(schema, str) and schema in self._width:
            return self._width[schema]
        s = _deref(schema, self.named)
        t = type_of(s)
        if t == "union":
            w = 1 + min(self.width(b) for b in s)
        elif t == "record":
            w = sum(self.width(f["type"]) for f in s["fields"])
        elif t == "fixed":
            w = int(s["size"])
        else:
            w = MIN_WIDTH[t]
        if isinstance(schema, str) and schema not in PRIMITIVES:
            self._width[schema] = w
        return w

    def work(self, schema: Schema, stack: tuple[str, ...]) -> int:
        if isinstance(schema, str) and schema not in PRIMITIVES:
            if schema not in self._work:
                self._work[schema] = self.work(_deref(schema, self.named), stack)
            return self._work[schema]
        s = _deref(schema, self.named)
        t = type_of(s)
        if isinstance(s, dict) and t in ("record", "enum", "fixed"):
            name = str(s["name"])
            if name in stack:
                self.problems.append(f"recursive type {name}")
                return 1
            stack = (*stack, name)
        if t == "union":
            return 1 + max(self.work(b, stack) for b in s)
        if t == "record":
            return 1 + sum(self.work(f["type"], stack) for f in s["fields"])
        if t == "array":
            self._check_items(s["items"], 0, stack, "array item")
        elif t == "map":
            self._check_items(s["values"], 1, stack, "map value")
        return 1

    def _check_items(self, item: Schema, key_width: int, stack: tuple[str, ...], what: str) -> None:
        work = self.work(item, stack) + key_width
        width = self.width(item) + key_width
        if width == 0:
            self.problems.append(
                f"{what} of type {type_of(_deref(item, self.named))} can be encoded in zero bytes"
            )
        elif work > MAX_WORK_PER_BYTE * width:
            self.problems.append(f"{what} costs {work} decode steps for {width} bytes")
