"""Canary personal data in every written form the masker supports (Hypothesis strategies).

A :class:`Canary` is one person's values (name, mobile, landline, ID number, address, e-mail,
bank card, the credit code of their individual business). :func:`written` renders a value the
way people write it (separators, ``+86``, full-width digits, grouped card numbers...).
:func:`leaks` finds any canary value in clear in a text, also when the text writes it with
separators or full-width characters, or in the encodings a reader undoes without effort.
"""

from __future__ import annotations

import json
import re
from dataclasses import astuple, dataclass, fields
from urllib.parse import quote, quote_plus

from hypothesis import strategies as st

from gateway.dev.samples import id_check_digit

RARE = "翀彧骞翊燊珩琬瑄昶晟煜烨琮瑾璟睿祎禛筠箐翎骅骐"
SURNAMES = ("诸葛", "欧阳", "司马", "上官", "慕容")
FULL = str.maketrans("0123456789-", "０１２３４５６７８９－")


@dataclass(frozen=True)
class Canary:
    name: str
    mobile: str
    landline: str
    id_number: str
    id15: str
    address: str
    email: str
    card: str
    uscc: str

    def values(self) -> dict[str, str]:
        return {f.name: v for f, v in zip(fields(self), astuple(self), strict=True)}


def _luhn_digit(body: str) -> str:
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return str((10 - total % 10) % 10)


@st.composite
def canaries(draw: st.DrawFn) -> Canary:
    digits = st.text("0123456789", min_size=1, max_size=1)
    mobile = "1" + draw(st.sampled_from("3456789")) + "".join(draw(digits) for _ in range(9))
    area = draw(st.sampled_from(["10", "21", "551", "553", "25", "571"]))
    landline = (
        "0"
        + area
        + draw(st.sampled_from("2345678"))
        + "".join(draw(digits) for _ in range(6 if len(area) == 3 else 7))
    )
    region = draw(st.sampled_from(["340202", "110101", "440304", "320106"]))
    year = draw(st.integers(1950, 2005))
    month, day = draw(st.integers(1, 12)), draw(st.integers(1, 28))
    seq = draw(st.integers(0, 999))
    first17 = f"{region}{year}{month:02d}{day:02d}{seq:03d}"
    id15 = f"{region}{year % 100:02d}{month:02d}{day:02d}{seq:03d}"
    card_body = "622202" + "".join(draw(digits) for _ in range(draw(st.sampled_from([9, 12]))))
    tag = draw(st.text("abcdefghjkmnpqrstuvwxyz", min_size=6, max_size=6))
    uscc_tail = draw(st.text("0123456789ABCDEFGHJKLMNPQRTUWXY", min_size=10, max_size=10))
    n = draw(st.integers(0, len(RARE) - 3))
    return Canary(
        name=draw(st.sampled_from(SURNAMES)) + RARE[n : n + 2],
        mobile=mobile,
        landline=landline,
        id_number=first17 + id_check_digit(first17),
        id15=id15,
        address=f"芜湖市镜湖区{RARE[n]}{RARE[n + 1]}路{draw(st.integers(1, 999))}号{tag}",
        email=f"{tag}.{draw(st.integers(0, 9999))}@example.cn",
        card=card_body + _luhn_digit(card_body),
        uscc="92" + region + uscc_tail,
    )


def written(field: str, value: str, form: int) -> str:
    """``value`` of ``field`` as people write it; ``form`` picks one of the written forms."""
    if field == "mobile":
        forms = [
            value,
            f"{value[:3]}-{value[3:7]}-{value[7:]}",
            f"{value[:3]} {value[3:7]} {value[7:]}",
            f"+86 {value}",
            f"+86-{value[:3]}-{value[3:7]}-{value[7:]}",
            f"0086{value}",
            value.translate(FULL),
            f"{value[:3]}-{value[3:7]}-{value[7:]}".translate(FULL),
            f"(+86){value}",
        ]
    elif field == "landline":
        area_len = 3 if value[1] in "12" else 4
        area, local = value[:area_len], value[area_len:]
        forms = [
            value,
            f"{area}-{local}",
            f"({area}){local}",
            f"{area} {local[:4]} {local[4:]}",
            f"+86 {area[1:]} {local}",
            f"{area}-{local}".translate(FULL),
        ]
    elif field == "id_number":
        forms = [
            value,
            value.lower(),
            f"{value[:6]} {value[6:14]} {value[14:]}",
            value.translate(FULL),
        ]
    elif field == "card":
        grouped = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
        forms = [value, grouped, grouped.replace(" ", "-")]
    elif field == "email":
        forms = [value, value.replace("@", "＠"), value.upper()]
    elif field == "name":
        forms = [value, " ".join(value)]
    else:
        forms = [value]
    return forms[form % len(forms)]


WRITTEN_FIELDS = ("mobile", "landline", "id_number", "id15", "card", "email", "uscc", "name")


def description(canary: Canary, forms: list[int]) -> str:
    """A complaint text quoting the canary's values in the given written forms."""
    parts = [
        f"{label}{written(field, canary.values()[field], form)}"
        for (field, label), form in zip(
            [
                ("name", "本人"),
                ("mobile", "，手机"),
                ("landline", "，座机"),
                ("id_number", "，身份证号"),
                ("id15", "，旧身份证号"),
                ("card", "，银行卡"),
                ("email", "，邮箱"),
                ("uscc", "，个体户统一社会信用代码"),
                ("address", "，住址"),
            ],
            forms + [0] * 9,
            strict=False,
        )
    ]
    return "".join(parts) + "。商品质量问题，要求退款。"


_SEPARATORS = re.compile(r"[\s\-－‐‑–—.．()（）+＋]")
_FOLD = str.maketrans("０１２３４５６７８９＠ＸＸ", "0123456789@XX")


def _normal(text: str) -> str:
    """Full-width folded, upper-cased, separators removed: a value written any way we support
    reads as its plain digits here."""
    return _SEPARATORS.sub("", text.translate(_FOLD).upper())


def _encodings(value: str) -> set[str]:
    return {
        json.dumps(value)[1:-1],
        quote(value),
        quote_plus(value),
        "".join(f"&#{ord(c)};" for c in value),
        "".join(f"&#x{ord(c):x};" for c in value),
    }


def leaks(surface: str, text: str, people: list[Canary]) -> list[str]:
    """Every canary value readable in ``text`` (clear, any written form, simple encodings)."""
    flat = _normal(text)
    found = []
    for canary in people:
        for field, value in canary.values().items():
            if _normal(value) in flat or any(form in text for form in _encodings(value)):
                found.append(f"{surface}: {field} {value!r}")
    return found
