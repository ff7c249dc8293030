"""Codec cost per ~1 KB complaint: ``python bench/bench_codec.py [--records N]``.

Prints the best of several runs (microseconds per record) for encode and decode in both wire
formats, for decoding with writer->reader resolution (an older writer schema), and for plain
fastavro on the same body as the floor the codec adds to.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import timeit
from collections.abc import Callable
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from gateway.avro.codec import Codec, current_schemas, fingerprint
from gateway.avro.schema_rules import strip_logical_types
from gateway.avro.schemas_path import schema_text
from gateway.config import CodecSettings
from gateway.dev.registry import RegistryServer
from gateway.dev.samples import bench_pool


def best_us(fn: Callable[[], Any], items: int, repeat: int = 7) -> float:
    return min(timeit.repeat(fn, number=1, repeat=repeat)) / items * 1e6


def older_writer() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text("complaint"))
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "language"]
    return schema


def report(label: str, fn: Callable[[], Any], items: int) -> None:
    print(f"{label:<26}{best_us(fn, items):6.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    pool = bench_pool(args.records)
    info = current_schemas()["complaint"]
    so = Codec(CodecSettings())
    encoded = [so.encode("complaint", r) for r in pool]
    n = len(pool)
    print(f"{n} complaints, {sum(map(len, encoded)) / n:.0f} bytes on average")

    bodies = [m[10:] for m in encoded]
    report(
        "fastavro read (floor)",
        lambda: [schemaless_reader(io.BytesIO(b), info.write, None) for b in bodies],
        n,
    )
    report(
        "fastavro write (floor)",
        lambda: [schemaless_writer(io.BytesIO(), info.write, r) for r in pool],
        n,
    )
    report("single_object encode", lambda: [so.encode("complaint", r) for r in pool], n)
    report("single_object decode", lambda: [so.decode(m) for m in encoded], n)

    with (
        RegistryServer() as server,
        Codec(CodecSettings(wire_format="confluent", registry_url=server.url)) as cf,
    ):
        framed = [cf.encode("complaint", r, "bench") for r in pool]
        report("confluent encode", lambda: [cf.encode("complaint", r, "bench") for r in pool], n)
        report("confluent decode", lambda: [cf.decode(m) for m in framed], n)

    old = older_writer()
    so.add_writer("complaint", old)
    old_parsed = parse_schema(strip_logical_types(copy.deepcopy(old)))
    old_msgs = []
    for r in pool:
        buf = io.BytesIO()
        buf.write(b"\xc3\x01" + fingerprint(old))
        schemaless_writer(buf, old_parsed, r)
        old_msgs.append(buf.getvalue())
    report("decode older writer", lambda: [so.decode(m) for m in old_msgs], n)


if __name__ == "__main__":
    main()
