"""Interface profiles of the ten simulated city bureaus (their side of each spec).

Kept apart from ``connectors/`` on purpose: a connector is certified against these, so a wrong
field name, category code or signature in a connector shows up as a failed check. Third-party
bureaus register a ``BureauProfile`` in the ``greenchannel.bureau_profiles`` entry-point group.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from gateway.dev.bureau_protocols import BureauProfile
from gateway.dev.bureau_protocols import Verdict as V
from gateway.errors import ConfigError

PROFILE_GROUP = "greenchannel.bureau_profiles"


def _codes(*values: str | int) -> dict[V, str | int]:
    """Codes in the order OK, DUPLICATE, BUSY, AUTH, INVALID, UNKNOWN_CATEGORY, REFUSED."""
    order = (V.OK, V.DUPLICATE, V.BUSY, V.AUTH, V.INVALID, V.UNKNOWN_CATEGORY, V.REFUSED)
    return dict(zip(order, values, strict=True))


def _set(*codes: str) -> frozenset[str]:
    return frozenset(codes)


BEIJING = BureauProfile(
    city="beijing", family="json_hmac", path="/api/12315/v1/complaints",
    key="header:x-idempotency-key",
    required=("wbbh", "tsrxm", "tsrdh", "bssmc", "tslb", "tsnr", "tssj"),
    phone="tsrdh", text="tsnr", text_max=2000, category="tslb",
    categories=_set("0101", "0102", "0201", "0202", "0301", "0302", "0401", "0501", "0601", "9900"),
    code_field="code", case_field="data.slbh", message_field="msg",
    codes=_codes("0000", "2001", "9001", "4010", "1001", "1003", "3001"),
    statuses={V.AUTH: 401}, case_prefix="BJ",
)  # fmt: skip
HANGZHOU = BureauProfile(
    city="hangzhou", family="json_hmac", path="/openapi/v2/complaint/submit",
    key="header:x-idempotency-key",
    required=("externalNo", "complainant.name", "complainant.mobile", "merchant.name",
              "typeCode", "content", "occurTime"),
    phone="complainant.mobile", text="content", text_max=1000, category="typeCode",
    categories=_set("ZL", "AQ", "QZ", "XJ", "TK", "WL", "FW", "JG", "YS", "QT"),
    code_field="resultCode", case_field="caseNo", message_field="resultMsg",
    codes=_codes("SUCCESS", "DUPLICATE", "SYSTEM_BUSY", "SIGN_INVALID", "PARAM_ERROR",
                 "TYPE_UNKNOWN", "REFUSED"),
    statuses={V.OK: 201, V.DUPLICATE: 409, V.AUTH: 401}, case_prefix="HZ",
)  # fmt: skip
NANJING = BureauProfile(
    city="nanjing", family="json_hmac", path="/12315/api/tousu",
    key="header:x-idempotency-key",
    required=("ywlsh", "xm", "sjhm", "qymc", "lbdm", "nr", "sj"),
    phone="sjhm", text="nr", text_max=1500, category="lbdm",
    categories=_set("1", "2", "3", "4", "5", "6", "7", "8", "9", "99"),
    code_field="status", case_field="result.ajbh", message_field="message",
    codes=_codes(0, 40900, 50300, 40100, 40001, 40002, 40300),
    statuses={V.AUTH: 401}, case_prefix="NJ",
)  # fmt: skip
GUANGZHOU = BureauProfile(
    city="guangzhou", family="soap", path="/ws/ComplaintService", key="externalId",
    required=("externalId", "complainantName", "complainantPhone", "merchantName",
              "categoryCode", "content", "occurredAt"),
    phone="complainantPhone", text="content", text_max=2000, category="categoryCode",
    categories=_set("101", "102", "201", "202", "301", "302", "401", "501", "601", "999"),
    code_field="resultCode", case_field="caseNumber", message_field="resultMessage",
    codes=_codes("0000", "0001", "9999", "", "1001", "1002", "2001"),
    soap=("urn:gz12315:complaint:v1", "SubmitComplaint",
          "urn:gz12315:complaint:v1#SubmitComplaint", "SubmitComplaintResponse"),
    case_prefix="GZ",
)  # fmt: skip
CHONGQING = BureauProfile(
    city="chongqing", family="soap", path="/services/TousuService", key="lsh",
    required=("lsh", "tsrxm", "lxdh", "bssmc", "tsnr", "tslx", "fssj"),
    phone="lxdh", text="tsnr", text_max=1000, category="tslx",
    categories=_set("ZL01", "AQ01", "QZ01", "GG01", "TK01", "WL01", "FW01", "JG01", "YS01",
                    "QT99"),
    code_field="fhm", case_field="slh", message_field="fhxx",
    codes=_codes("00", "01", "98", "", "10", "11", "20"),
    soap=("http://12315.cq.gov.cn/tousu", "TousuRequest",
          "http://12315.cq.gov.cn/tousu/Submit", "TousuResponse"),
    client_fault_for_invalid=True, retry_after_date=True, case_prefix="CQ",
)  # fmt: skip
HEFEI = BureauProfile(
    city="hefei", family="form_sm3", path="/api/ts/add", key="wbbh",
    required=("wbbh", "tsr", "lxdh", "bts", "tslb", "tsnr", "fssj", "sign_type"),
    phone="lxdh", text="tsnr", text_max=800, category="tslb",
    categories=_set("11", "12", "21", "22", "31", "32", "41", "51", "61", "99"),
    code_field="ret", case_field="data.case_no", message_field="msg",
    codes=_codes("0", "2", "9", "40", "1", "1", "3"),
    form=("app_id", "timestamp", "nonce_str", "ms"), case_prefix="HF",
)  # fmt: skip
WUHU = BureauProfile(
    city="wuhu", family="form_sm3", path="/12315/complaint.do", key="out_id",
    required=("out_id", "consumer_name", "consumer_tel", "shop_name", "type", "detail",
              "happen_date"),
    phone="consumer_tel", text="detail", text_max=500, category="type",
    categories=_set("Q", "S", "F", "A", "R", "D", "V", "P", "I", "O"),
    code_field="result_code", case_field="case_id", message_field="err_msg",
    codes=_codes("SUCCESS", "DUPLICATE", "BUSY", "SIGN_ERROR", "PARAM_ERROR", "TYPE_ERROR",
                 "REFUSED"),
    form=("appid", "ts", "nonce", "s"), form_upper=True, form_answer="form", case_prefix="WH",
)  # fmt: skip
NANCHANG = BureauProfile(
    city="nanchang", family="form_sm3", path="/gateway/tousu/create", key="biz_no",
    required=("biz_no", "xm", "dh", "qy", "lb", "nr", "method"),
    phone="dh", text="nr", text_max=1000, category="lb",
    categories=_set(*(f"NC0{i}" for i in range(1, 10)), "NC99"),
    code_field="errcode", case_field="ajh", message_field="errmsg",
    codes=_codes(0, 10, 99, 40001, 20001, 20002, 30001),
    form=("app_key", "timestamp", "nonce", "datetime"), form_upper=True, case_prefix="NC",
)  # fmt: skip
SHENZHEN = BureauProfile(
    city="shenzhen", family="oauth_json", path="/api/v2/complaints",
    key="header:idempotency-key",
    required=("requestId", "consumer.name", "consumer.phone", "merchant.name", "category",
              "description", "receivedAt"),
    phone="consumer.phone", text="description", text_max=4000, category="category",
    categories=_set("PRODUCT_QUALITY", "PRODUCT_SAFETY", "FRAUD", "FALSE_ADVERTISING", "REFUND",
                    "LOGISTICS", "SERVICE", "PRICING", "PERSONAL_INFORMATION", "OTHER"),
    code_field="status", case_field="caseId", message_field="message",
    codes=_codes("ACCEPTED", "DUPLICATE", "BUSY", "UNAUTHORIZED", "INVALID_FIELD",
                 "UNKNOWN_CATEGORY", "REFUSED"),
    statuses={V.OK: 201, V.INVALID: 422, V.UNKNOWN_CATEGORY: 422},
    mtls=True, grant_path="/oauth2/token", grant_scope="complaint.write", case_prefix="SZ",
)  # fmt: skip
SUZHOU = BureauProfile(
    city="suzhou", family="oauth_json", path="/sz12315/v1/cases",
    key="header:idempotency-key",
    required=("out_case_no", "complainant_name", "complainant_mobile", "enterprise_name",
              "case_type", "content", "occur_at"),
    phone="complainant_mobile", text="content", text_max=2000, category="case_type",
    categories=_set(*(f"T0{i}" for i in range(1, 10)), "T99"),
    code_field="code", case_field="data.case_no", message_field="message",
    codes=_codes("200", "40901", "50301", "40100", "40001", "40002", "40301"),
    grant_path="/oauth/token", case_prefix="SU",
)  # fmt: skip

BUILTIN: dict[str, BureauProfile] = {
    p.city: p
    for p in (BEIJING, HANGZHOU, NANJING, GUANGZHOU, CHONGQING, HEFEI, WUHU, NANCHANG, SHENZHEN,
              SUZHOU)
}  # fmt: skip


def profile_for(city: str) -> BureauProfile:
    """The built-in profile of a city, else one registered by entry point."""
    if city in BUILTIN:
        return BUILTIN[city]
    for ep in entry_points(group=PROFILE_GROUP, name=city):
        profile = ep.load()
        if isinstance(profile, BureauProfile):
            return profile
        raise ConfigError(f"entry point {PROFILE_GROUP}:{city} is not a BureauProfile")
    raise ConfigError(f"the bureau simulator has no profile for city {city!r}")
