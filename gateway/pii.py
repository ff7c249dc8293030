"""Masking of personal data (PIPL; GB/T 35273 masked display): the gateway's one masker.

Every place that writes text derived from a record — logs, dead-letter headers, metric labels,
CLI output, exception messages — goes through :func:`mask_text` (connectors use :func:`trim`
and :func:`mask_name` from here too). Two layers:

* **Patterns** that catch Chinese personal data anywhere, in the forms people write it:
  mobile numbers (``13957001200``, ``139-5700-1200``, ``139 5700 1200``, ``+86 139…``,
  ``0086…``, full-width digits ``１３９…``), landlines (``010-62345678``, ``(0551)6233 4455``,
  ``+86 551 6233 4455``, with an extension), resident ID numbers (18 digits, the last may be
  ``X``; the legacy 15-digit form), unified social credit codes of individual businesses
  (``92…``: they identify the natural person who runs it; a company's code is not personal
  data and is kept), bank-card numbers (16–19 digits, Luhn-valid, grouped or not) and e-mail
  addresses (also with a full-width ``＠``).
* **Known values**: the personal values of the record at hand (the consumer's name, phone, ID
  number, address, e-mail) are masked wherever they appear, whatever their form: in clear, with
  separators or spaces between characters, in full-width or other-case characters, and inside
  percent-, JSON- and XML/HTML-encodings.

Masking keeps a short head and tail where GB/T 35273 display does (``139****1200``,
``340202********0012``) and never the whole value.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

# Separators people put inside numbers: hyphens (ASCII, full-width, dashes), dots and spaces
# (any Unicode space, the ideographic one included).
_SEP = r"[\s\-－‐‑–—.．]"
_D = r"\d"  # Unicode decimal digits: ASCII and full-width alike
_NOT_DIGIT_BEFORE = r"(?<![\dA-Za-z])"
_NOT_DIGIT_AFTER = r"(?![\dA-Za-z])"
_CC = rf"(?:(?:[+＋]|00|００)(?:86|８６){_SEP}*|[(（]\s*[+＋]?(?:86|８６)\s*[)）]{_SEP}*)"
"""China's country code in front of a number: ``+86``, ``0086``, ``(+86)``."""

_ID18 = re.compile(
    _NOT_DIGIT_BEFORE
    + rf"([1-9１-９]{_D}{{5}}){_SEP}?({_D}{{8}}){_SEP}?"
    + rf"({_D}{{3}}[{_D}XxＸｘ])"
    + _NOT_DIGIT_AFTER
)
_ID15 = re.compile(
    _NOT_DIGIT_BEFORE
    + rf"([1-9１-９]{_D}{{5}}){_SEP}?({_D}{{2}}(?:[0０][1-9１-９]|[1１][0-2０-２])(?:[0０][1-9１-９]|[12１２]{_D}|[3３][01０１])){_SEP}?"
    + rf"({_D}{{3}})"
    + _NOT_DIGIT_AFTER
)
_USCC_PERSON = re.compile(
    r"(?<![0-9A-Z])(92\d{6})([0-9A-HJ-NPQRTUWXY]{9})([0-9A-HJ-NPQRTUWXY])(?![0-9A-Z])"
)
_CARD = re.compile(
    _NOT_DIGIT_BEFORE
    + rf"({_D}{{4}}(?:{_SEP}?{_D}{{4}}){{3}}(?:{_SEP}?{_D}{{1,3}})?)"
    + _NOT_DIGIT_AFTER
)
_MOBILE = re.compile(
    r"(?<![\dA-Za-z+＋])"
    + rf"{_CC}?(1[3-9]{_D}|[１][３-９]{_D})((?:{_SEP}?{_D}){{4}})((?:{_SEP}?{_D}){{4}})"
    + _NOT_DIGIT_AFTER
)
_LANDLINE = re.compile(
    r"(?<![\dA-Za-z+＋\-])"
    + rf"(?:{_CC}\(?|\(?[0０])([1-9１-９]{_D}{{1,2}})\)?{_SEP}*"
    + rf"({_D}{{3,4}}){_SEP}?({_D}{{3,4}})(?:\s*(?:-|－|转|ext\.?|x)\s*{_D}{{1,6}})?"
    + _NOT_DIGIT_AFTER
)
_EMAIL = re.compile(
    r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*([@＠][A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"
)

_FULL_WIDTH = {chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)} | {"\u3000": " "}
_HALF_WIDTH = {v: k for k, v in _FULL_WIDTH.items() if v != " "}


def digits(text: str) -> str:
    """The ASCII digits of ``text`` (full-width digits folded), everything else dropped."""
    return "".join(str(int(c)) for c in text if c.isdecimal())


def mask_name(name: str) -> str:
    """张三丰 -> 张**; a single character is fully masked."""
    if len(name) <= 1:
        return "*"
    return name[0] + "*" * (len(name) - 1)


def mask_value(value: str) -> str:
    """A generic mask for a known personal value: keep a short head, hide the rest."""
    if len(value) <= 2:
        return "*" * len(value)
    keep = 1 if len(value) < 8 else 3
    return value[:keep] + "*" * (len(value) - keep)


def trim(text: str, limit: int = 512) -> str:
    """One line (runs of whitespace, newlines included, become one space), at most ``limit``
    characters, with an ellipsis when cut. Used for every record-derived text we write."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def encoded_forms(value: str) -> set[str]:
    """``value`` as it reads in clear and inside form, JSON and XML/HTML encodings."""
    return {
        value,
        quote(value),
        quote(value).lower(),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value)[1:-1].upper().replace("\\U", "\\u"),
        "".join(f"&#{ord(c)};" for c in value),
        "".join(f"&#x{ord(c):x};" for c in value),
        "".join(f"&#x{ord(c):X};" for c in value),
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


def _char_class(c: str) -> str:
    """A regex class for one character of a known value: itself, its full-/half-width twin,
    its other case."""
    variants = {c, c.lower(), c.upper(), _FULL_WIDTH.get(c, c), _HALF_WIDTH.get(c, c)}
    variants |= {_HALF_WIDTH.get(v, v) for v in set(variants)}
    if len(variants) == 1:
        return re.escape(c)
    return "[" + "".join(re.escape(v) for v in sorted(variants)) + "]"


@lru_cache(maxsize=512)
def _known_pattern(value: str) -> re.Pattern[str]:
    """``value`` in clear with optional separators between its characters, in any width or
    case, or in one of its encoded forms."""
    chars = [c for c in value if not c.isspace() and c not in "-－"]
    flexible = rf"{_SEP}*".join(_char_class(c) for c in chars)
    alternatives = [flexible, *(re.escape(f) for f in encoded_forms(value) if f != value)]
    if value.isdecimal() or digits(value) == value.lstrip("+"):
        national = value[2:] if value.startswith("86") and len(value) > 11 else value
        alternatives.append(_CC + rf"{_SEP}*".join(_char_class(c) for c in national))
    return re.compile("|".join(sorted(alternatives, key=len, reverse=True)))


def mask_known(text: str, known: Iterable[str | None]) -> str:
    """Mask every known personal value in ``text``, whatever its form."""
    values = {v.strip() for v in known if v and len(v.strip()) >= 2}
    for value in sorted(values, key=len, reverse=True):
        text = _known_pattern(value).sub(mask_value(value), text)
    return text


def _luhn(number: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(number)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    number = digits(m.group(0))
    if not 16 <= len(number) <= 19 or not (_luhn(number) or number.startswith("62")):
        return m.group(0)
    return number[:4] + "*" * (len(number) - 8) + number[-4:]


def _mobile(m: re.Match[str]) -> str:
    number = digits(m.group(1) + m.group(2) + m.group(3))
    return number[:3] + "****" + number[-4:]


def _landline(m: re.Match[str]) -> str:
    area = "0" + digits(m.group(1))
    local = digits(m.group(2) + m.group(3))
    return f"{area}-****{local[-4:]}"


def _id(m: re.Match[str]) -> str:
    head, middle, end = digits(m.group(1)), digits(m.group(2)), m.group(3)
    tail = digits(end[:-1]) + ("X" if end[-1] in "XxＸｘ" else digits(end[-1]))
    return head + "*" * len(middle) + tail


def mask_patterns(text: str) -> str:
    """Mask the personal-data patterns (no known values)."""
    if not any(c.isdecimal() or c in "@＠" for c in text):
        return text
    text = _ID18.sub(_id, text)
    text = _CARD.sub(_card, text)
    text = _ID15.sub(_id, text)
    text = _USCC_PERSON.sub(lambda m: m.group(1) + "*********" + m.group(3), text)
    text = _MOBILE.sub(_mobile, text)
    text = _LANDLINE.sub(_landline, text)
    return _EMAIL.sub(r"\1***\2", text)


PERSONAL_FIELDS = ("name", "phone", "id_number", "address", "email")
"""The consumer fields of a complaint or escalation that are personal data."""


def known_values(record: Mapping[str, Any]) -> list[str]:
    """The personal values of a decoded complaint or escalation (consumer fields, and the
    credit code of an individual business), to pass to :func:`mask_text` as ``known``."""
    consumer = record.get("consumer")
    values = []
    if isinstance(consumer, Mapping):
        values = [v for k in PERSONAL_FIELDS if isinstance(v := consumer.get(k), str) and v]
    merchant = record.get("merchant")
    code = merchant.get("credit_code") if isinstance(merchant, Mapping) else None
    if isinstance(code, str) and code.startswith("92"):
        values.append(code)
    return values


def mask_text(text: str, known: Iterable[str | None] = ()) -> str:
    """Mask every known personal value (any form) and every personal-data pattern in ``text``."""
    return mask_patterns(mask_known(text, known))
