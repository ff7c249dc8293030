"""gateway.ids: the same strings as the standard library's uuid5."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ids import uuid5_str
from gateway.routing.escalation import escalation_id


@settings(max_examples=2_000, deadline=None)
@given(namespace=st.uuids(), name=st.text())
def test_uuid5_str_is_the_standard_librarys_uuid5(namespace: uuid.UUID, name: str) -> None:
    expected = uuid.uuid5(namespace, name)
    got = uuid5_str(namespace, name)
    assert got == str(expected)
    assert uuid.UUID(got).version == 5 and uuid.UUID(got).variant == uuid.RFC_4122


def test_escalation_ids_did_not_change() -> None:
    # the bureau's idempotency key: an id that changed would open a second case on replay
    assert escalation_id("C20261201000001", "hefei") == str(
        uuid.uuid5(uuid.UUID("8a6f3f0e-2c1b-5d8e-9a47-12315c0ffee0"), "C20261201000001/hefei")
    )
