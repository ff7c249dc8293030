from typing import Any

NULL: int
BOOLEAN: int
LONG: int
FLOAT: int
DOUBLE: int
STRING: int
BYTES: int
FIXED: int
ENUM: int
UNION: int
RECORD: int
ARRAY: int

class Reader:
    def __init__(
        self, program: tuple[Any, ...], read_error: type[Exception], struct_error: type[Exception]
    ) -> None: ...
    def __call__(self, buffer: bytes, start: int, /) -> tuple[dict[str, Any], int]: ...
