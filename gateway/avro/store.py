"""The schema store: writer schemas upstream teams add without a gateway release.

Single-object messages name their writer schema only by fingerprint, so the gateway must know
the writer schema itself. Besides the current schemas (``schemas/*.avsc``), it accepts:

* every ``*.avsc`` of ``codec.schema_store.directory``, read at start (a file the gateway cannot
  accept stops the start, naming the file and why);
* the compacted topic ``{prefix}schemas.v1`` (``Topics.schemas``), read to its end at start and
  followed while running. ``greenchannel schemas register FILE`` checks a schema and publishes
  it there: key = its fingerprint as Avro tools print it (:func:`~gateway.avro.codec.fingerprint_text`),
  value = its JSON. A record whose key is not its value's fingerprint, or whose schema the
  gateway cannot accept, is logged and skipped (a later good record is still taken);
  tombstones are ignored (a schema is never forgotten while running: records may still use it).

Every schema goes through :meth:`Codec.add_writer`: the current reader schema must be able to
read it (BACKWARD: :mod:`gateway.avro.schema_rules`) and its decode cost must be bounded.

A record with an unknown fingerprint waits (at most ``codec.schema_store.wait_s``) for the
store to catch up with the topic's end: a schema registered just before the records that use
it is found. A fingerprint still unknown after a catch-up is not waited for again until the
store learns a new schema, so a stream of unknown records costs one wait, not one per record;
and one catch-up answers every miss for the next :data:`CATCH_UP_INTERVAL_S` (the follower
reads the topic continuously anyway), so records with ever new random fingerprints cannot
stall the router for more than a catch-up (~a poll) per interval.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.avro.codec import Codec, fingerprint, fingerprint_text
from gateway.errors import ConfigError, UnknownSchema

log = logging.getLogger(__name__)
CatchUp = Callable[[float], bool]
"""Blocks until the store's source was read to its end (as of the call), or the timeout."""
_MAX_MISSES = 10_000
CATCH_UP_INTERVAL_S = 1.0


def store_record(schema: str | dict[str, Any]) -> tuple[bytes, bytes]:
    """The schema store record (key, value) of a writer schema."""
    raw = json.loads(schema) if isinstance(schema, str) else schema
    text = json.dumps(raw, ensure_ascii=False, separators=(",", ":"))
    return fingerprint_text(fingerprint(raw)).encode("ascii"), text.encode("utf-8")


class SchemaStore:
    """Feeds writer schemas into a codec and answers its unknown-fingerprint questions."""

    def __init__(
        self,
        codec: Codec,
        *,
        wait_s: float,
        catch_up: CatchUp | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.codec = codec
        self.wait_s = wait_s
        self.catch_up = catch_up
        self._clock = clock
        self._caught_up_at = -CATCH_UP_INTERVAL_S
        self._lock = threading.Lock()
        self._generation = 0
        self._missed: dict[bytes, int] = {}
        codec.schema_source = self.resolve

    def add(self, schema: str | dict[str, Any], source: str) -> bytes:
        """Accept a writer schema (raises :class:`UnknownSchema` when it is refused)."""
        known = set(self.codec.writer_fingerprints())
        fp = self.codec.add_writer(None, schema)
        if fp not in known:
            with self._lock:
                self._generation += 1
            log.info("schema store: writer schema %s from %s", fingerprint_text(fp), source)
        return fp

    def load_directory(self, directory: Path) -> list[bytes]:
        """Every ``*.avsc`` in ``directory``; :class:`ConfigError` naming a refused file."""
        if not directory.is_dir():
            raise ConfigError(f"codec.schema_store.directory {directory} is not a directory")
        out = []
        for path in sorted(directory.glob("*.avsc")):
            try:
                out.append(self.add(path.read_text(encoding="utf-8"), str(path.name)))
            except (OSError, UnknownSchema) as exc:
                raise ConfigError(f"writer schema {path}: {exc}") from exc
        return out

    def on_record(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the schema store topic (called on the follower's thread)."""
        if value is None:
            return
        try:
            text = value.decode("utf-8")
            fp = fingerprint_text(fingerprint(json.loads(text)))
        except Exception as exc:
            log.warning(
                "schema store: skipped a record that is not a schema: %s", type(exc).__name__
            )
            return
        if key is not None and key.decode("ascii", "replace") != fp:
            log.warning("schema store: skipped schema %s stored under another key", fp)
            return
        try:
            self.add(text, "the schema store topic")
        except UnknownSchema as exc:
            log.warning("schema store: skipped writer schema %s: %s", fp, exc)

    def resolve(self, fp: bytes) -> bool:
        """An unknown fingerprint (wire bytes): wait for the store to catch up, once per store
        change; True when the codec now knows it."""
        if self.codec.knows(fp):
            return True
        with self._lock:
            generation = self._generation
            if self._missed.get(fp) == generation:
                return False
        recent = self._clock() - self._caught_up_at < CATCH_UP_INTERVAL_S
        if self.catch_up is not None and self.wait_s > 0 and not recent:
            self.catch_up(self.wait_s)
            self._caught_up_at = self._clock()
        if self.codec.knows(fp):
            return True
        with self._lock:
            if len(self._missed) >= _MAX_MISSES:
                self._missed.clear()
            self._missed[fp] = self._generation
        return False
