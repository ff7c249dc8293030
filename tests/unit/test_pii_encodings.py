"""Personal data hidden behind an encoding is masked too (bureau answers echo what they got)."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import pytest

from gateway.delivery.city import Attempts, response_excerpt
from gateway.pii import mask_text, readable

pytestmark = pytest.mark.unit
NAME, PHONE, ADDRESS = "诸葛翀", "13912345678", "芜湖市镜湖区灿星路100号"
KNOWN = [NAME, PHONE, ADDRESS]


@pytest.mark.parametrize(
    "body",
    [
        urlencode({"code": "REFUSED", "msg": f"拒绝：{NAME} {PHONE} {ADDRESS}"}),
        json.dumps({"code": 1, "msg": f"拒绝：{NAME} {PHONE} {ADDRESS}"}),  # \\u escapes
        f"<r><m>{''.join(f'&#{ord(c)};' for c in NAME)} {ADDRESS}</m></r>",
        f"<r><m>{NAME}，{PHONE}，{ADDRESS}</m></r>",
    ],
    ids=["form", "json-ascii", "xml-charrefs", "xml"],
)
def test_the_response_excerpt_is_readable_and_masked(body: str) -> None:
    excerpt = response_excerpt(Attempts(last_body=body.encode()), KNOWN)
    for value in KNOWN:
        assert value not in excerpt and quote(value) not in excerpt
    assert "诸*" in excerpt


def test_known_values_are_masked_in_their_encoded_forms_too() -> None:
    text = f"n={quote(NAME)}&j={json.dumps(NAME)}&x={''.join(f'&#x{ord(c):x};' for c in NAME)}"
    masked = mask_text(text, KNOWN)
    assert "%E8%AF%B8" not in masked and "\\u8bf8" not in masked and "&#x8bf8;" not in masked


def test_readable_leaves_plain_text_alone() -> None:
    assert readable("plain answer: 100% done") == "plain answer: 100% done"
    assert readable('{"a": "b"}') == '{"a": "b"}'
