"""Avro encoding and decoding of the gateway's messages, in two wire formats.

========================  ===================================================================
wire format               bytes
========================  ===================================================================
``single_object``         ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint of the
(default)                 schema's Parsing Canonical Form + Avro body. Needs no registry.
``confluent``             ``00`` + 4-byte big-endian schema id + Avro body. Ids come from a
                          Confluent-compatible registry; the subject follows
                          ``codec.subject_name_strategy`` (see below).
========================  ===================================================================

:meth:`Codec.encode` writes the configured format; :meth:`Codec.decode` accepts both and tells
them apart by the first byte. The schemas (``schemas/*.avsc``) are parsed once per process.
Timestamps (``timestamp-millis``) stay ``int`` epoch milliseconds on both sides: logical types
are not converted, so a record decodes exactly to what was encoded and no datetime is built.

Subjects (Confluent framing), as Confluent's serializers name them
(``codec.subject_name_strategy``): ``TopicNameStrategy`` (default) ``<topic>-value``,
``RecordNameStrategy`` the record's full name (``com.greenchannel.v1.Escalation``),
``TopicRecordNameStrategy`` ``<topic>-<full name>``. A kind always written to one topic (the
receipts) may be given it once (``kind_topics``); encoding without any topic falls back to the
record's full name.

Writers and readers: a record written with an older or newer version of a schema, known by
fingerprint (:meth:`Codec.add_writer`, fed by the schema store, :mod:`gateway.avro.store`) or
by registry id, is read with the current schema (Avro schema resolution: added fields take
their defaults, removed ones are skipped). Writer schemas are admitted only if the current
schema can read them (:mod:`gateway.avro.schema_rules`) and if their decode cost is bounded.
An unknown fingerprint asks ``schema_source`` (the store: it waits briefly to catch up) before
it is :class:`UnknownSchema`. Fingerprints are printed as Avro's tools print them: the 64-bit
value in hex, most significant byte first (:func:`fingerprint_text`; the wire holds them
little-endian).

Hostile input. Before decoding: the size cap (``codec.max_message_bytes``,
:class:`OversizedRecord`). Decode cost is bounded by the admitted writer schemas: no recursive
types, and every array item costs at least one byte and a bounded number of steps per byte, so
a message declaring 30 million items runs out of bytes (EOF) after a few. After decoding, the
whole buffer must have been read (:class:`TrailingBytes`). Negative enum and union indexes,
which fastavro would silently take from the end of the symbol list, are rejected. Every failure
is a :class:`DecodeError` with a bounded ``reason`` (``empty``, ``bad_magic``, ``truncated``,
``oversized``, ``unknown_schema``, ``unsafe_schema``, ``incompatible_schema``, ``bad_index``,
``invalid_utf8``, ``schema_resolution``, ``trailing_bytes``, ``malformed``...); a registry
outage is a :class:`TransientError`, never a reason to dead-letter.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, cast, get_args

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import validate

from gateway import cities
from gateway.avro.reader import AvroReadError, Reader, compile_reader
from gateway.avro.registry import SchemaRegistry, subject_name
from gateway.avro.schema_rules import backward_problems, decode_cost_problems, strip_logical_types
from gateway.avro.schemas_path import schema_text
from gateway.avro.writer import Writer, compile_writer
from gateway.config import CodecSettings
from gateway.errors import (
    ConfigError,
    DecodeError,
    InvalidComplaint,
    OversizedRecord,
    RecordError,
    RegistryUnavailable,
    TrailingBytes,
    TransientError,
    UnknownSchema,
)

Kind = Literal["complaint", "escalation", "receipt", "case_update", "case_state", "handling_result"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
RECORD_NAMES: Final[dict[str, Kind]] = {
    "Complaint": "complaint",
    "Escalation": "escalation",
    "DeliveryReceipt": "receipt",
    "CaseUpdate": "case_update",
    "CaseState": "case_state",
    "HandlingResult": "handling_result",
}
SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"
CONFLUENT_MAGIC: Final = b"\x00"
_SO_HEADER = 10
_CF_HEADER = 5
_MAX_REFUSED_IDS = 10_000
"""Registry ids remembered as unknown or refused (hostile ids must not each cost a request)."""


class Decoded(NamedTuple):
    """A decoded message (a tuple: built once per record on the router's hot path)."""

    kind: Kind
    record: dict[str, Any]
    writer_fingerprint: bytes
    """CRC-64-AVRO fingerprint (8 bytes, little-endian) of the schema the record was written with."""
    schema_id: int | None = None
    """Registry schema id, for Confluent-framed messages."""


def fingerprint(schema: Any) -> bytes:
    """CRC-64-AVRO (Rabin) fingerprint of a schema's Parsing Canonical Form, little-endian."""
    parsed = parse_schema(copy.deepcopy(schema))
    return bytes.fromhex(_fastavro_fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def fingerprint_text(fp: bytes) -> str:
    """A fingerprint as Avro's tools print it: the 64-bit value in hex (Java's
    ``Long.toHexString(SchemaNormalization.parsingFingerprint64(s))``, zero-padded), i.e. the
    wire's little-endian bytes reversed."""
    return fp[::-1].hex()


def parse_fingerprint(text: str) -> bytes:
    """The wire bytes of a fingerprint printed by :func:`fingerprint_text`; ValueError if bad."""
    raw = bytes.fromhex(text.strip().removeprefix("0x"))
    if len(raw) != 8:
        raise ValueError(f"a fingerprint is 16 hex digits, got {len(raw) * 2}")
    return raw[::-1]


# --- schemas, parsed once ----------------------------------------------------------------------


class _NoWrapList(list[Any]):
    """A list fastavro's compiled reader cannot index from the end.

    fastavro reads an enum symbol as ``symbols[index]`` and a union branch as ``union[index]``,
    so a negative index from the wire silently picks a symbol from the end. Its Cython code
    wraps a negative index by adding ``len()``: this inflated length turns it into an index far
    out of range (IndexError), while in-range indexes keep the C fast path at no cost.
    """

    __slots__ = ()

    def __len__(self) -> int:
        return sys.maxsize // 2


class _CheckedList(_NoWrapList):
    """Fallback for a fastavro build that indexes without wrapping: reject negatives in Python."""

    __slots__ = ()

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int) and index < 0:
            raise IndexError("list index out of range")
        return list.__getitem__(self, index)


def _harden(schema: Any, list_type: type[list[Any]], seen: set[int]) -> Any:
    """Make every enum symbol list and union of a parsed schema a ``list_type`` (in place)."""
    if isinstance(schema, list):
        return list_type(_harden(s, list_type, seen) for s in schema)
    if not isinstance(schema, dict) or id(schema) in seen:
        return schema
    seen.add(id(schema))
    if "symbols" in schema:
        schema["symbols"] = list_type(schema["symbols"])
    for key in ("items", "values"):
        if key in schema:
            schema[key] = _harden(schema[key], list_type, seen)
    for field in schema.get("fields", ()):
        field["type"] = _harden(field["type"], list_type, seen)
    for named in schema.get("__named_schemas", {}).values():
        _harden(named, list_type, seen)
    return schema


@functools.cache
def _list_type() -> type[list[Any]]:
    """The cheapest list type that makes this fastavro build reject a negative enum index."""
    probe = {
        "type": "record",
        "name": "Probe",
        "fields": [{"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}}],
    }
    for list_type in (_NoWrapList, _CheckedList):
        schema = _harden(parse_schema(copy.deepcopy(probe)), list_type, set())
        try:
            schemaless_reader(io.BytesIO(b"\x01"), schema, None)  # zig-zag 1 = index -1
        except IndexError:
            return list_type
    return _CheckedList


def _parse(raw: Any) -> dict[str, Any]:
    parsed = parse_schema(raw)
    if not isinstance(parsed, dict):
        raise TypeError(f"expected a named schema, got {type(parsed).__name__}")
    return parsed


def _read_schema(raw: Any) -> dict[str, Any]:
    """A parsed copy for reading: no logical types, hardened lists."""
    return cast(dict[str, Any], _harden(_parse(strip_logical_types(raw)), _list_type(), set()))


@dataclass(frozen=True, slots=True)
class _Writer:
    """How to read records written with one writer schema."""

    kind: Kind
    schema: dict[str, Any]
    """The writer schema, parsed for reading."""
    reader: dict[str, Any] | None
    """The current schema when it differs from the writer's, else None (no resolution)."""
    fingerprint: bytes
    compiled: Reader | None = None
    """Generated reader (:mod:`gateway.avro.reader`) when no resolution is needed and the
    schema compiles; else fastavro reads."""


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """One kind's current schema."""

    kind: Kind
    text: str
    """JSON text as in ``schemas/<kind>.avsc`` (what is registered)."""
    parsed: dict[str, Any]
    """Parsed as written, logical types included (for checks)."""
    write: dict[str, Any]
    """Parsed for writing: logical types stripped."""
    plain_read: dict[str, Any]
    """Parsed for reading as a *reader* schema (resolution)."""
    fingerprint: bytes
    header: bytes
    """Single-object header: magic + fingerprint."""
    writer: _Writer
    encoder: Writer | None = None
    """Generated writer (:mod:`gateway.avro.writer`) when the schema compiles; fastavro writes
    what it does not take, and every record when None."""


@functools.cache
def current_schemas() -> Mapping[Kind, SchemaInfo]:
    """Every kind's current schema, loaded from ``schemas/`` and parsed once per process."""
    out: dict[Kind, SchemaInfo] = {}
    for kind in KINDS:
        text = schema_text(kind)
        raw = json.loads(text)
        fp = fingerprint(raw)
        plain = _parse(strip_logical_types(raw))
        out[kind] = SchemaInfo(
            kind=kind,
            text=text,
            parsed=_parse(copy.deepcopy(raw)),
            write=plain,
            plain_read=plain,
            fingerprint=fp,
            header=SINGLE_OBJECT_MAGIC + fp,
            writer=_Writer(kind, _read_schema(raw), None, fp, compile_reader(plain)),
            encoder=compile_writer(plain),
        )
    return out


# --- the codec ---------------------------------------------------------------------------------


class Codec:
    """Encodes records in the configured wire format and decodes either format.

    ``registry`` is required for ``wire_format: confluent`` and used to resolve unknown schema
    ids; when omitted, one is built from ``settings.registry_url`` if that is set. ``writers``
    are extra (older or newer) writer schemas to accept in single-object messages.
    ``kind_topics``: the topic a kind is always written to, for its subject when :meth:`encode`
    is given no topic. ``schema_source``: asked about an unknown single-object fingerprint
    (it may add the writer and return True; see :class:`gateway.avro.store.SchemaStore`).
    """

    def __init__(
        self,
        settings: CodecSettings,
        registry: SchemaRegistry | None = None,
        *,
        writers: Iterable[tuple[Kind, str | Mapping[str, Any]]] = (),
        kind_topics: Mapping[Kind, str] | None = None,
    ) -> None:
        self._owns_registry = registry is None and settings.registry_url is not None
        if registry is None and settings.registry_url:
            registry = SchemaRegistry(settings.registry_url)
        if settings.wire_format == "confluent" and registry is None:
            raise ConfigError("codec.wire_format is confluent but codec.registry_url is not set")
        self.wire_format = settings.wire_format
        self.subject_name_strategy = settings.subject_name_strategy
        self.kind_topics: dict[Kind, str] = dict(kind_topics or {})
        self.schema_source: Callable[[bytes], bool] | None = None
        self.max_message_bytes = settings.max_message_bytes
        self.registry = registry
        self._schemas = current_schemas()
        self._by_fp: dict[bytes, _Writer] = {
            i.fingerprint: i.writer for i in self._schemas.values()
        }
        self._by_id: dict[int, _Writer] = {}
        self._headers: dict[tuple[str | None, Kind], bytes] = {}
        self._refused_ids: dict[int, UnknownSchema] = {}
        for kind, schema in writers:
            self.add_writer(kind, schema)

    def close(self) -> None:
        """Close the registry client if this codec created it."""
        if self._owns_registry and self.registry is not None:
            self.registry.close()

    def __enter__(self) -> Codec:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # encoding

    def encode(self, kind: Kind, record: Mapping[str, Any], topic: str | None = None) -> bytes:
        """Encode one record in the configured wire format.

        With Confluent framing the schema is registered (once) under the subject the naming
        strategy gives for ``topic`` (or ``kind_topics[kind]``); without any topic, under the
        record's full name. Raises
        :class:`RecordError` (``unencodable``) when the record does not fit the schema and
        :class:`OversizedRecord` when the message would exceed the size cap.
        """
        info = self._schemas[kind]
        header = (
            info.header if self.wire_format == "single_object" else self._confluent(kind, topic)
        )
        data = None
        if info.encoder is not None:
            try:
                data = header + info.encoder(record)
            except Exception:  # not a record the generated writer takes as is: fastavro decides
                data = None
        if data is None:
            buf = io.BytesIO()
            buf.write(header)
            try:
                schemaless_writer(buf, info.write, record)
            except Exception as exc:
                raise RecordError(
                    _encode_problem(kind, info.write, record, exc), reason="unencodable"
                ) from exc
            data = buf.getvalue()
        if len(data) > self.max_message_bytes:
            raise OversizedRecord(
                f"encoded {kind} is {len(data)} bytes (cap {self.max_message_bytes})"
            )
        return data

    def schema_id(self, kind: Kind, topic: str | None = None) -> int:
        """The registry id of the current ``kind`` schema for ``topic`` (registers it once)."""
        return int.from_bytes(self._confluent(kind, topic)[1:], "big")

    def subject(self, kind: Kind, topic: str | None = None) -> str:
        """The registry subject of ``kind`` written to ``topic`` (naming strategy)."""
        name = str(self._schemas[kind].parsed["name"])
        topic = topic if topic is not None else self.kind_topics.get(kind)
        if topic is None:
            return name
        return subject_name(self.subject_name_strategy, topic, name)

    def _confluent(self, kind: Kind, topic: str | None) -> bytes:
        header = self._headers.get((topic, kind))
        if header is None:
            if self.registry is None:
                raise ConfigError("Confluent framing needs codec.registry_url")
            info = self._schemas[kind]
            subject = self.subject(kind, topic)
            schema_id = self.registry.register(subject, info.text)
            self._by_id[schema_id] = info.writer
            header = CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")
            self._headers[(topic, kind)] = header
        return header

    # decoding

    def decode(self, data: bytes | None) -> Decoded:
        """Decode a message in either wire format; every failure is a :class:`DecodeError`.

        ``None`` (a Kafka tombstone) is an empty message.
        """
        if type(data) is not bytes:
            data = b"" if data is None else bytes(data)
        size = len(data)
        if size > self.max_message_bytes:
            raise OversizedRecord(f"message is {size} bytes (cap {self.max_message_bytes})")
        schema_id = None
        if data[:2] == SINGLE_OBJECT_MAGIC:
            writer = self._by_fp.get(data[2:_SO_HEADER]) or self._ask_source(data)
            start = _SO_HEADER
        elif data[:1] == CONFLUENT_MAGIC and size >= _CF_HEADER:
            schema_id = int.from_bytes(data[1:_CF_HEADER], "big")
            writer = self._by_id.get(schema_id) or self._fetch(schema_id)
            start = _CF_HEADER
        else:
            raise _bad_header(data)
        if writer.compiled is not None:
            try:
                record, end = writer.compiled(data, start)
            except Exception as exc:
                raise _decode_error(exc) from exc
            if end > size:
                raise DecodeError("body truncated", reason="truncated")
            if end != size:
                raise TrailingBytes(f"{size - end} bytes after the {writer.kind} record")
            return Decoded(writer.kind, record, writer.fingerprint, schema_id)
        src = io.BytesIO(data)
        src.seek(start)
        try:
            record = cast(dict[str, Any], schemaless_reader(src, writer.schema, writer.reader))
        except Exception as exc:
            raise _decode_error(exc) from exc
        if src.tell() != size:
            raise TrailingBytes(f"{size - src.tell()} bytes after the {writer.kind} record")
        return Decoded(writer.kind, record, writer.fingerprint, schema_id)

    def decode_as(self, kind: Kind, data: bytes | None) -> dict[str, Any]:
        """Decode a message that must be a ``kind``; another kind is :class:`UnknownSchema`."""
        decoded = self.decode(data)
        if decoded.kind != kind:
            raise UnknownSchema(f"expected a {kind}, got a {decoded.kind}", reason="wrong_kind")
        return decoded.record

    # writer schemas

    def add_writer(self, kind: Kind | None, schema: str | Mapping[str, Any]) -> bytes:
        """Accept single-object messages written with another version of a schema.

        Returns its fingerprint. Raises :class:`UnknownSchema` (reason ``invalid_schema``,
        ``wrong_kind``, ``unsafe_schema`` or ``incompatible_schema``) when it is refused.
        """
        writer = _admit(self._schemas, kind, schema)
        self._by_fp.setdefault(writer.fingerprint, writer)
        return writer.fingerprint

    def knows(self, fp: bytes) -> bool:
        """Whether single-object messages with this fingerprint (wire bytes) can be read."""
        return fp in self._by_fp

    def writer_fingerprints(self) -> list[bytes]:
        """Fingerprints of every accepted writer schema (current ones included)."""
        return list(self._by_fp)

    def _ask_source(self, data: bytes) -> _Writer:
        """An unknown fingerprint: ask the schema source (which may wait), then give up."""
        fp = data[2:_SO_HEADER]
        if len(fp) == 8 and self.schema_source is not None and self.schema_source(fp):
            writer = self._by_fp.get(fp)
            if writer is not None:
                return writer
        raise _unknown_fingerprint(data)

    def _fetch(self, schema_id: int) -> _Writer:
        if self.registry is None:
            raise UnknownSchema(f"schema id {schema_id}: no schema registry configured")
        refused = self._refused_ids.get(schema_id)
        if refused is not None:
            raise UnknownSchema(str(refused), reason=refused.reason)
        try:
            writer = _admit(self._schemas, None, self.registry.schema_by_id(schema_id))
        except RegistryUnavailable:
            raise
        except TransientError as exc:  # an outage, not the record's fault: the caller waits
            raise RegistryUnavailable(f"schema id {schema_id}: {exc}") from exc
        except UnknownSchema as exc:
            if len(self._refused_ids) >= _MAX_REFUSED_IDS:
                self._refused_ids.clear()
            self._refused_ids[schema_id] = exc
            raise
        self._by_id[schema_id] = writer
        return writer


def _admit(schemas: Mapping[Kind, SchemaInfo], kind: Kind | None, schema: Any) -> _Writer:
    """Check a writer schema and prepare it for reading with the current schema."""
    try:
        raw = json.loads(schema) if isinstance(schema, str) else copy.deepcopy(dict(schema))
        parsed = _parse(copy.deepcopy(raw))
    except Exception as exc:
        raise UnknownSchema(
            f"invalid writer schema: {type(exc).__name__}: {exc}", reason="invalid_schema"
        ) from exc
    name = str(parsed.get("name", ""))
    found = RECORD_NAMES.get(name.rsplit(".", 1)[-1]) if parsed.get("type") == "record" else None
    if found is None or (kind is not None and found != kind):
        raise UnknownSchema(
            f"writer schema {name or '?'} is not a {kind or 'known record'}", reason="wrong_kind"
        )
    problems = decode_cost_problems(parsed)
    if problems:
        raise UnknownSchema(
            f"unsafe writer schema {name}: {'; '.join(problems)}", reason="unsafe_schema"
        )
    info = schemas[found]
    problems = backward_problems(info.parsed, parsed)
    if problems:
        raise UnknownSchema(
            f"writer schema {name} cannot be read as {found}: {'; '.join(problems)}",
            reason="incompatible_schema",
        )
    fp = fingerprint(raw)
    if fp == info.fingerprint:
        return info.writer
    return _Writer(found, _read_schema(raw), info.plain_read, fp)


# --- errors ------------------------------------------------------------------------------------


def _unknown_fingerprint(data: bytes) -> DecodeError:
    if len(data) < _SO_HEADER:
        return DecodeError(
            f"single-object header truncated ({len(data)} bytes)", reason="truncated"
        )
    return UnknownSchema(
        f"unknown schema fingerprint {fingerprint_text(data[2:_SO_HEADER])} "
        "(register the writer schema: greenchannel schemas register FILE)"
    )


def _bad_header(data: bytes) -> DecodeError:
    if not data:
        return DecodeError("empty message", reason="empty")
    if data[:1] == CONFLUENT_MAGIC:
        return DecodeError(f"Confluent header truncated ({len(data)} bytes)", reason="truncated")
    return DecodeError(f"unknown wire format (first bytes {data[:2].hex()})", reason="bad_magic")


_COMPILED_READER_ERRORS = {
    # the same reasons fastavro's failures map to below
    "bad_index": ("enum or union index out of range", "bad_index"),
    "negative_length": ("negative string or bytes length", "truncated"),
    "truncated": ("body truncated inside a string, bytes or fixed", "truncated"),
    "varint_too_long": ("body truncated inside a number (varint over 64 bits)", "truncated"),
    "bad_boolean": ("malformed body: boolean byte not 0 or 1", "malformed"),
}


def _decode_error(exc: Exception) -> DecodeError:
    name = type(exc).__name__
    if isinstance(exc, AvroReadError):
        text, reason = _COMPILED_READER_ERRORS.get(exc.reason, (exc.reason, "malformed"))
        return DecodeError(text, reason=reason)
    if isinstance(exc, UnicodeDecodeError):
        return DecodeError(f"invalid UTF-8 in a string at byte {exc.start}", reason="invalid_utf8")
    if isinstance(exc, IndexError) and "list" in str(exc):  # symbols[index] / union[index]
        return DecodeError("enum or union index out of range", reason="bad_index")
    if isinstance(exc, EOFError | IndexError | struct.error):
        return DecodeError(f"body truncated ({name})", reason="truncated")
    if name == "SchemaResolutionError":
        return DecodeError(
            f"cannot resolve writer to reader schema: {exc}", reason="schema_resolution"
        )
    return DecodeError(f"malformed body: {name}", reason="malformed")


def _encode_problem(kind: str, schema: Any, record: Any, exc: Exception) -> str:
    """Why a record does not fit the schema: field paths only, never values (personal data)."""
    try:
        validate(record, schema, raise_errors=True)
    except Exception as err:
        fields = sorted({str(e.field) for e in getattr(err, "errors", ()) if e.field})
        if fields:
            return f"cannot encode {kind}: invalid {', '.join(fields)}"
    return f"cannot encode {kind}: {type(exc).__name__}"


# --- business validation -----------------------------------------------------------------------


_NOTHING: Mapping[str, Any] = {}


def validate_complaint(record: Mapping[str, Any]) -> None:
    """Check the business data a decoded complaint must carry.

    Raises :class:`InvalidComplaint` for an empty complaint, merchant or order id, phone or
    description, and :class:`UnknownCity` when ``city_code`` is not a known six-digit GB/T 2260
    code (see :mod:`gateway.cities`).
    """
    consumer = record.get("consumer") or _NOTHING
    merchant = record.get("merchant") or _NOTHING
    order = record.get("order")
    for field, value in (
        ("complaint_id", record.get("complaint_id")),
        ("consumer.phone", consumer.get("phone")),
        ("merchant.merchant_id", merchant.get("merchant_id")),
        ("description", record.get("description")),
        ("order.order_id", order.get("order_id") if order is not None else "-"),
    ):
        # a first character that is not blank proves the text is not blank, without strip()
        # copying a whole description
        if not isinstance(value, str) or not value or (value[0].isspace() and not value.strip()):
            raise InvalidComplaint(f"complaint {field} is missing or empty", reason="missing_field")
    code = record.get("city_code")
    cities.require(code if isinstance(code, str) else "")
