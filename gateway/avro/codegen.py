"""What the compiled Avro readers (:mod:`gateway.avro.reader`) and writers
(:mod:`gateway.avro.writer`) share: source lines, fresh local names, named types, the guard
against recursive types, and turning the source into a function."""

from __future__ import annotations

from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "string", "bytes"})


class Unsupported(Exception):
    """The schema uses what is not compiled: fastavro handles it."""


class Codegen:
    def __init__(self, env: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.env = env
        self.names: dict[str, dict[str, Any]] = {}
        self.active: set[str] = set()
        self.count = 0

    def var(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def register(self, schema: dict[str, Any]) -> None:
        name = schema.get("name")
        if isinstance(name, str):
            self.names.setdefault(name, schema)

    def resolve(self, schema: Any) -> Any:
        """A named type's definition for a reference to it (fastavro's parsed schemas define a
        named type once and name it after); unions and primitive names as they are."""
        if isinstance(schema, str) and schema not in PRIMITIVES:
            if schema not in self.names:
                raise Unsupported(f"unknown named type {schema}")
            return self.names[schema]
        return schema

    def enter(self, schema: dict[str, Any]) -> str | None:
        """Start a record's code (registering its name); refuses a record inside itself."""
        name = schema.get("name")
        if not isinstance(name, str):
            return None
        if name in self.active:
            raise Unsupported(f"recursive type {name}")
        self.active.add(name)
        self.register(schema)
        return name

    def leave(self, name: str | None) -> None:
        if name is not None:
            self.active.discard(name)

    def build(self, function: str, filename: str) -> Any:
        """The generated ``function``. Names never enter the source (field names are ``repr``
        literals, symbols are bound values), so a schema cannot inject code."""
        env = dict(self.env)
        exec(compile("\n".join(self.lines), filename, "exec"), env)  # noqa: S102 - see above
        return env[function]
