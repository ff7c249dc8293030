"""Masking of personal data (PIPL; GB/T 35273 masked display) for logs, headers and CLI output.

Two layers: patterns that catch personal data anywhere (mainland mobile numbers, resident ID
numbers, e-mail addresses, landlines), and exact values known to be personal for the record at
hand (the consumer's name and address from the complaint), masked wherever they occur.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote_plus

_ID = re.compile(r"(?<!\d)(\d{6})\d{8}(\d{3}[\dXx])(?!\d)")
_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")
_LANDLINE = re.compile(r"(?<!\d)(0\d{2,3})-?\d{4}(\d{3,4})(?!\d)")
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*(@[A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def mask_name(name: str) -> str:
    """张三丰 -> 张**; single characters are fully masked."""
    if len(name) <= 1:
        return "*"
    return name[0] + "*" * (len(name) - 1)


def mask_value(value: str) -> str:
    """A generic mask for a known personal value: keep a short head, hide the rest."""
    if len(value) <= 2:
        return "*" * len(value)
    keep = 1 if len(value) < 8 else 3
    return value[:keep] + "*" * (len(value) - keep)


def encoded_forms(value: str) -> set[str]:
    """``value`` as it reads in clear and inside form, JSON and XML/HTML encodings."""
    return {
        value,
        quote(value),
        quote_plus(value),
        json.dumps(value)[1:-1],
        "".join(f"&#{ord(c)};" for c in value),
        "".join(f"&#x{ord(c):x};" for c in value),
    }


def readable(text: str) -> str:
    """Undo the encodings a foreign payload (a bureau's answer) may hide text behind.

    A form-encoded body is percent-decoded, a JSON document with ``\\u`` escapes is re-dumped in
    clear and character references are resolved, so that masking sees the personal data.
    """
    stripped = text.strip()
    if "\\u" in stripped and stripped[:1] in "{[":
        try:
            return json.dumps(json.loads(stripped), ensure_ascii=False)
        except ValueError:
            pass
    if "%" in stripped and "=" in stripped and not any(c.isspace() for c in stripped):
        stripped = unquote_plus(stripped)
    if "&#" in stripped:
        stripped = html.unescape(stripped)
    return stripped


def mask_text(text: str, known: Iterable[str | None] = ()) -> str:
    """Mask personal data patterns and every known personal value (also encoded) in ``text``."""
    for value in sorted({v for v in known if v and len(v) >= 2}, key=len, reverse=True):
        masked = mask_value(value)
        for form in encoded_forms(value):
            text = text.replace(form, masked)
    text = _ID.sub(r"\1********\2", text)
    text = _MOBILE.sub(r"\1****\2", text)
    text = _LANDLINE.sub(r"\1-****\2", text)
    return _EMAIL.sub(r"\1***\2", text)


def trim(text: str, limit: int = 512) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
