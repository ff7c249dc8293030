"""Cities the gateway knows, by GB/T 2260 administrative division code.

The ten green-channel cities have a bureau connector (their ``key`` is the connector and config
name). The other prefecture-level cities are known, so a complaint from them is valid, but it
has no green channel: it stays inside the platform's own pyramid. Municipalities directly under
the central government use their province-level code (Beijing ``110000``); other cities use
their prefecture-level code (Guangzhou ``440100``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import UnknownCity


@dataclass(frozen=True, slots=True)
class City:
    key: str
    """Stable lower-case key: connector and config name for green-channel cities."""
    code: str
    """Six-digit GB/T 2260 division code."""
    name_zh: str
    name_en: str
    province_zh: str
    """Province (省/自治区); for a municipality, the municipality itself."""
    green_channel: bool


def _c(key: str, code: str, zh: str, en: str, province: str, green: bool = False) -> City:
    return City(key, code, zh, en, province, green)


CITIES: tuple[City, ...] = (
    # the ten green-channel cities
    _c("beijing", "110000", "北京市", "Beijing", "北京市", True),
    _c("guangzhou", "440100", "广州市", "Guangzhou", "广东省", True),
    _c("shenzhen", "440300", "深圳市", "Shenzhen", "广东省", True),
    _c("chongqing", "500000", "重庆市", "Chongqing", "重庆市", True),
    _c("hangzhou", "330100", "杭州市", "Hangzhou", "浙江省", True),
    _c("hefei", "340100", "合肥市", "Hefei", "安徽省", True),
    _c("nanchang", "360100", "南昌市", "Nanchang", "江西省", True),
    _c("suzhou", "320500", "苏州市", "Suzhou", "江苏省", True),
    _c("wuhu", "340200", "芜湖市", "Wuhu", "安徽省", True),
    _c("nanjing", "320100", "南京市", "Nanjing", "江苏省", True),
    # known cities without a green channel
    _c("shanghai", "310000", "上海市", "Shanghai", "上海市"),
    _c("tianjin", "120000", "天津市", "Tianjin", "天津市"),
    _c("chengdu", "510100", "成都市", "Chengdu", "四川省"),
    _c("xian", "610100", "西安市", "Xi'an", "陕西省"),
    _c("wuhan", "420100", "武汉市", "Wuhan", "湖北省"),
    _c("changsha", "430100", "长沙市", "Changsha", "湖南省"),
    _c("zhengzhou", "410100", "郑州市", "Zhengzhou", "河南省"),
    _c("jinan", "370100", "济南市", "Jinan", "山东省"),
    _c("qingdao", "370200", "青岛市", "Qingdao", "山东省"),
    _c("shenyang", "210100", "沈阳市", "Shenyang", "辽宁省"),
    _c("dalian", "210200", "大连市", "Dalian", "辽宁省"),
    _c("harbin", "230100", "哈尔滨市", "Harbin", "黑龙江省"),
    _c("changchun", "220100", "长春市", "Changchun", "吉林省"),
    _c("fuzhou", "350100", "福州市", "Fuzhou", "福建省"),
    _c("xiamen", "350200", "厦门市", "Xiamen", "福建省"),
    _c("kunming", "530100", "昆明市", "Kunming", "云南省"),
    _c("nanning", "450100", "南宁市", "Nanning", "广西壮族自治区"),
    _c("guiyang", "520100", "贵阳市", "Guiyang", "贵州省"),
    _c("taiyuan", "140100", "太原市", "Taiyuan", "山西省"),
    _c("shijiazhuang", "130100", "石家庄市", "Shijiazhuang", "河北省"),
    _c("ningbo", "330200", "宁波市", "Ningbo", "浙江省"),
    _c("wuxi", "320200", "无锡市", "Wuxi", "江苏省"),
    _c("dongguan", "441900", "东莞市", "Dongguan", "广东省"),
)

BY_CODE: dict[str, City] = {c.code: c for c in CITIES}
BY_KEY: dict[str, City] = {c.key: c for c in CITIES}
GREEN_CHANNEL: tuple[City, ...] = tuple(c for c in CITIES if c.green_channel)


def by_code(code: str) -> City | None:
    return BY_CODE.get(code)


def city_key(code: str) -> str | None:
    """The city key of a division code (``"340200"`` -> ``"wuhu"``), or None when unknown."""
    city = BY_CODE.get(code)
    return None if city is None else city.key


def green_channel_key(code: str) -> str | None:
    """The green-channel city key of a division code, or None (unknown or no green channel)."""
    city = BY_CODE.get(code)
    return city.key if city is not None and city.green_channel else None


def require(code: str) -> City:
    """The city of a division code; :class:`UnknownCity` when it is malformed or not known."""
    city = BY_CODE.get(code)
    if city is not None:
        return city
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        # never quote it: a producer may have put free text (an address) there
        raise UnknownCity(f"city_code ({len(code)} characters) is not a six-digit GB/T 2260 code")
    raise UnknownCity(f"city_code {code} is not a known city")
