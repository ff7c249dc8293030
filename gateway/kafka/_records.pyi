from collections.abc import Sequence
from typing import Any

def decode_batch(
    buf: bytes,
    pos: int,
    count: int,
    topic: str,
    partition: int,
    base_offset: int,
    first_timestamp: int,
    log_append_time: int | None,
    record_type: type[tuple[Any, ...]],
    /,
) -> list[Any] | None: ...
def encode_records(
    buf: bytearray,
    batch_size: int,
    num_records: int,
    group: Sequence[tuple[bytes, bytes, Sequence[tuple[str, bytes]]]],
    i: int,
    offset: int,
    ts_delta: int,
    /,
) -> tuple[int, int] | None: ...
