"""Property: for any status + headers + body a bureau answers, the escalation ends receipted or
dead-lettered (or waits and then ends so), never a dead worker or a lost record.

Real broker, the real connectors (Beijing, Hangzhou, Nanjing), the raw-socket hostile bureau.
Hypothesis draws a batch of arbitrary first answers; after its drawn answer each escalation
meets a healthy bureau, so "waiting" must turn into exactly one outcome within the bound.
One deliverer serves every example (the property is also that it survives all of them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import answers_kit as kit
from tests.hostile.answers_kit import Live, Publisher, dlq_header

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    # the deliverer's threads (tenacity jitter, kafka-python) use the global random module
    # while Hypothesis draws; that is not randomness inside a strategy
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]
BATCH = 12
EXAMPLES = 3

_STATUS = st.one_of(
    st.sampled_from([200, 201, 202, 204, 301, 302, 307, 400, 401, 403, 404, 408, 409, 413]),
    st.sampled_from([422, 429, 500, 502, 503, 504]),
    st.integers(200, 599),
)
_HEADER = st.one_of(
    st.tuples(
        st.just("Retry-After"),
        st.one_of(
            st.integers(-5, 10**9).map(str),
            st.just("Wed, 21 Oct 2015 07:28:00 GMT"),
            st.text("0123456789.-e ", max_size=12),
        ),
    ),
    st.tuples(
        st.just("Content-Type"),
        st.sampled_from(["application/json", "text/html", "text/plain; charset=gbk", "x/y"]),
    ),
    st.tuples(
        st.just("Location"),
        st.sampled_from(["/elsewhere", "http://10.0.0.1/", "//evil.example/", "ftp://x/", ""]),
    ),
    st.tuples(st.just("Content-Encoding"), st.sampled_from(["gzip", "deflate", "br", "bogus"])),
    st.tuples(st.just("X-Junk"), st.text(st.characters(min_codepoint=32, max_codepoint=126))),
)


@st.composite
def json_bodies(draw: Any) -> bytes:
    code = draw(st.sampled_from(["0000", "SUCCESS", "0", "2001", "9001", "3001", "", "OK"]))
    case = draw(
        st.one_of(
            st.none(),
            st.text(max_size=80),
            st.integers(),
            st.just("9" * 70),
            st.lists(st.integers(), max_size=3),
        )
    )
    body = {
        draw(st.sampled_from(["code", "resultCode", "status"])): code,
        "data": {"slbh": case},
        "caseNo": case,
        "result": {"ajbh": case},
    }
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode()


@st.composite
def answers(draw: Any) -> tuple[int, dict[str, str], bytes]:
    status = draw(_STATUS)
    headers = dict(draw(st.lists(_HEADER, max_size=3)))
    body = draw(
        st.one_of(
            st.just(b""),
            st.binary(max_size=512),
            st.text(max_size=200).map(lambda t: t.encode("utf-8")),
            st.just(b"<html><body>502 Bad Gateway</body></html>"),
            json_bodies(),
        )
    )
    return status, headers, body


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str) -> Iterator[Live]:
    with kit.live(kafka_bootstrap) as running:
        yield running


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(answers(), min_size=BATCH, max_size=BATCH))
def test_any_bureau_answer_ends_in_exactly_one_outcome(
    live: Live, batch: list[tuple[int, dict[str, str], bytes]]
) -> None:
    publisher = Publisher(live.settings)
    cities = list(kit.PROFILES)
    ids = []
    for i, (status, headers, body) in enumerate(batch):
        esc = publisher.escalation(cities[i % len(cities)])
        live.bureau.script(esc["escalation_id"], kit.respond(status, body, headers))
        ids.append(publisher.publish(esc))
    publisher.close()

    live.published += len(ids)
    d = live.deliverer
    assert kit.wait_until(lambda: d.outcomes() >= live.published, 60), "an outcome is missing"
    out = kit.read_outcomes(live.settings, 0, timeout_s=3)
    for esc_id, (status, headers, body) in zip(ids, batch, strict=True):
        receipts = out.receipts.get(esc_id, [])
        dead = out.dead.get(esc_id, [])
        what = f"{status} {headers} {body[:80]!r}"
        if dead:
            assert len(dead) == 1, what
            assert dlq_header(dead[0], "reason"), what
            assert [r["outcome"] for r in receipts] in ([], ["REJECTED"]), what
        else:
            assert [r["outcome"] for r in receipts] == ["ACCEPTED"], what
        assert live.bureau.opened.count(esc_id) <= 1, what
    assert live.deliverer.workers_alive()
    assert live.deliverer.thread.is_alive() and live.deliverer.exit_code is None
