"""Cities the gateway knows, by GB/T 2260 administrative division code: the one table.

The ten green-channel cities have a bureau connector (their ``connector`` is its entry-point
name in ``greenchannel.connectors``, equal to their ``key``, which is also their config name)
and development defaults (:class:`BureauDefaults`). The other prefecture-level cities are
known, so a complaint from them is valid, but it has no green channel: it stays inside the
platform's own pyramid. Municipalities directly under the central government use their
province-level code (Beijing ``110000``); other cities use their prefecture-level code
(Guangzhou ``440100``).

Everything else derives from this table: the built-in ``cities:`` config block
(:func:`default_city_config`, merged under ``gateway/defaults/config.yaml``), the default
``router.green_cities``, and the tests (the connector entry points and the connectors'
``city_code`` are checked against it in ``tests/unit/test_facts.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import UnknownCity


@dataclass(frozen=True, slots=True)
class BureauDefaults:
    """Built-in settings of a green-channel city: the local bureau simulator's endpoint (the
    development default) and what the bureau allows."""

    sim_port: int
    """Port of the city's bureau on the local simulator (``greenchannel bureaus``)."""
    rate_per_s: float
    """Requests per second the bureau accepts."""
    mtls: bool = False
    """The bureau wants HTTPS with a client certificate (the simulator's TLS files)."""


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
    connector: str | None = None
    """Entry-point name of the city's bureau connector; None without a green channel."""
    defaults: BureauDefaults | None = None
    """Built-in settings (green-channel cities only)."""

    @property
    def green_channel(self) -> bool:
        return self.connector is not None


def _c(key: str, code: str, zh: str, en: str, province: str) -> City:
    return City(key, code, zh, en, province)


def _g(
    key: str, code: str, zh: str, en: str, province: str, port: int, rate: float, mtls: bool = False
) -> City:
    return City(key, code, zh, en, province, key, BureauDefaults(port, rate, mtls))


CITIES: tuple[City, ...] = (
    # the ten green-channel cities: connector = key, simulator port, bureau rate
    _g("beijing", "110000", "北京市", "Beijing", "北京市", 18101, 20),
    _g("guangzhou", "440100", "广州市", "Guangzhou", "广东省", 18102, 20),
    _g("shenzhen", "440300", "深圳市", "Shenzhen", "广东省", 18103, 30, mtls=True),
    _g("chongqing", "500000", "重庆市", "Chongqing", "重庆市", 18104, 20),
    _g("hangzhou", "330100", "杭州市", "Hangzhou", "浙江省", 18105, 40),
    _g("hefei", "340100", "合肥市", "Hefei", "安徽省", 18106, 20),
    _g("nanchang", "360100", "南昌市", "Nanchang", "江西省", 18107, 20),
    _g("suzhou", "320500", "苏州市", "Suzhou", "江苏省", 18108, 30),
    _g("wuhu", "340200", "芜湖市", "Wuhu", "安徽省", 18109, 20),
    _g("nanjing", "320100", "南京市", "Nanjing", "江苏省", 18110, 50),
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
GREEN_CHANNEL_KEYS: tuple[str, ...] = tuple(c.key for c in GREEN_CHANNEL)
"""The green-channel city keys, in table order (the default ``router.green_cities``)."""


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


SIM_TLS_DIR = "var/bureaus/tls"
"""Where ``greenchannel bureaus`` writes its development CA and client certificate."""


def default_city_config(city: City) -> dict[str, Any]:
    """The built-in ``cities.<key>`` block of a green-channel city: the local simulator's
    endpoint, the bureau's rate, and development-only credentials the simulator also knows
    (``check-config`` refuses them for any endpoint that is not on loopback). The simulator
    speaks plain HTTP for the cities without mTLS, hence ``allow_plaintext``: plain HTTP is only
    ever accepted for a loopback endpoint (docs/security.md)."""
    if city.defaults is None:
        raise ValueError(f"{city.key} has no green channel")
    d = city.defaults
    block: dict[str, Any] = {
        "endpoint": f"{'https' if d.mtls else 'http'}://127.0.0.1:{d.sim_port}",
        "rate_per_s": d.rate_per_s,
        **({} if d.mtls else {"allow_plaintext": True}),
        "credentials": {
            "client_id": f"greenchannel-{city.key}",
            "secret": f"dev-only-{city.key}-secret",
        },
    }
    if d.mtls:
        block["tls"] = {
            "ca_file": f"{SIM_TLS_DIR}/ca.pem",
            "cert_file": f"{SIM_TLS_DIR}/client.pem",
            "key_file": f"{SIM_TLS_DIR}/client.key",
        }
    return block


def default_cities_config() -> dict[str, dict[str, Any]]:
    """The built-in ``cities:`` config block: every green-channel city, from the table."""
    return {c.key: default_city_config(c) for c in GREEN_CHANNEL}
