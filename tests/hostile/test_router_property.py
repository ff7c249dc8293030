"""Property (Hypothesis), against the real broker: for any bytes on the input topic, the router
routes or dead-letters that record, exactly once and within a bounded time, and the valid
complaints published after it all arrive (1,000 of them at the end).

One router, one reader and one publisher serve every example (a broker round trip each), so the
example count is kept small; the corpus files next to this one hold the cases found so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.avro.codec import Codec
from gateway.config import Settings
from gateway.dev.samples import SampleFactory
from gateway.topics import Topics
from tests.conftest import TopicFactory
from tests.helpers import header
from tests.hostile.router_kit import OutputReader, Publisher, RouterRun, router_settings

BOUND_S = 30.0
"""Each hostile record and the two valid complaints behind it must have their outcome by then."""


def _valid_body(codec: Codec, topic: str) -> bytes:
    start = int(time.time() * 1000) - 3_600_000
    sample = SampleFactory(seed=41, major_share=1.0, start_ms=start).next()
    return codec.encode("complaint", sample.record, topic)


def hostile_values(body: bytes) -> st.SearchStrategy[bytes | None]:
    """Random bytes, both wire formats' magic bytes followed by junk, and a valid complaint
    mutated (bytes replaced, cut, inserted) — plus tombstones and a few sizes near limits."""
    positions = st.integers(min_value=0, max_value=len(body) - 1)
    replaced = st.lists(st.tuples(positions, st.integers(0, 255)), min_size=1, max_size=4).map(
        lambda edits: _replace(body, edits)
    )
    cut = positions.map(lambda i: body[:i])
    inserted = st.tuples(positions, st.binary(min_size=1, max_size=64)).map(
        lambda p: body[: p[0]] + p[1] + body[p[0] :]
    )
    framed = st.tuples(
        st.sampled_from([b"\xc3\x01", b"\xc3\x01" + body[2:10], b"\x00", b"\x00\x00\x00\x00\x01"]),
        st.binary(max_size=512),
    ).map(lambda p: p[0] + p[1])
    # up to just under the broker limit: the dead letter of the largest is over it (finding 1)
    sized = st.sampled_from([300_000, 1_000_000, 1_048_300]).map(
        lambda n: b"\xc3\x01" + b"\x07" * n
    )
    return st.one_of(st.binary(max_size=2048), framed, replaced, cut, inserted, sized, st.none())


def _replace(body: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(body)
    for position, value in edits:
        out[position] = value
    return bytes(out)


def test_any_bytes_get_one_outcome_in_bounded_time_and_valid_complaints_keep_flowing(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory
) -> None:
    topic_factory.create_all()
    conf = router_settings(settings_factory, topic_factory.prefix)
    t = Topics(conf.topics.prefix)
    codec = Codec(conf.codec)
    pub = Publisher(conf)
    reader = OutputReader(conf, pub)
    hostile: list[str] = []
    valid: list[str] = []
    body = _valid_body(codec, t.complaints)
    with RouterRun(conf) as run:

        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            value=hostile_values(body),
            headers=st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=64)), max_size=5),
        )
        # always: a value whose dead letter is over the broker's limit (issue 9, finding 1)
        @example(value=b"\xc3\x01" + b"\x07" * 1_048_300, headers=[])
        def one_record(value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
            tag = pub.send(value, headers=headers)
            behind = pub.valid(codec, 2, seed=len(hostile))
            hostile.append(tag)
            valid.extend(behind)
            took = reader.wait_for([tag, *behind], timeout_s=BOUND_S)
            assert took < BOUND_S
            assert run.thread.is_alive()

        one_record()
        tail = pub.valid(codec, 1000, seed=99)
        reader.wait_for(tail, timeout_s=120)
        reader.linger(2)
        assert run.thread.is_alive()
    out = reader.outcomes
    for tag in hostile:
        outcomes = out.of(tag)
        assert len(outcomes) == 1, (tag, [r.topic for r in outcomes])
        if outcomes[0].topic == t.dlq_complaints:
            assert header(outcomes[0], "gc-dlq-reason")
    for tag in [*valid, *tail]:
        assert len(out.routed.get(tag, [])) == 1, tag
    reader.close()
    pub.close()
