"""Discover, validate and load connector plug-ins (entry-point group ``greenchannel.connectors``).

Built-in cities and third-party ones register the same way::

    [project.entry-points."greenchannel.connectors"]
    wuhu = "connectors.wuhu:connector"

:func:`load_connectors` runs at start-up, before anything is consumed. It raises
:class:`~gateway.errors.ConnectorError` naming the culprit when an entry point

* is registered twice under the same name (e.g. by two distributions),
* cannot be imported or loaded,
* is not a :class:`~gateway.sdk.Connector` (missing attribute or method),
* has a ``name`` different from its entry-point name,
* has a ``city_code`` that is not six digits, or an empty ``family``,
* sets ``token_grant`` to something that is not a :class:`~gateway.sdk.TokenGrant`,
* shares its ``city_code`` with another loaded connector.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from gateway.cities import BY_CODE, BY_KEY
from gateway.errors import ConnectorError
from gateway.sdk import TLS_VERSIONS, Connector, TokenGrant, TransportPolicy

GROUP = "greenchannel.connectors"
_CITY_CODE = re.compile(r"^[0-9]{6}$")


@dataclass(frozen=True, slots=True)
class ConnectorInfo:
    """A loaded connector and where it came from (for ``greenchannel connectors list``)."""

    connector: Connector
    entry_point: str
    """``module:attribute``."""
    distribution: str
    """The installed distribution that registered it, e.g. ``greenchannel 0.1.0``."""

    @property
    def auth(self) -> str:
        if self.connector.token_grant is not None:
            return "oauth2-client-credentials"
        label = getattr(self.connector, "auth", "")
        return label if isinstance(label, str) and label else self.connector.family


def load_connectors(
    names: set[str] | None = None, *, eps: Iterable[EntryPoint] | None = None
) -> dict[str, Connector]:
    """Load and validate connectors, all of them or only ``names``; keyed by name.

    Duplicates are checked over *every* registered entry point, even when only some are
    loaded. ``eps`` replaces the installed entry points (tests).
    """
    return {name: info.connector for name, info in describe_connectors(names, eps=eps).items()}


def describe_connectors(
    names: set[str] | None = None, *, eps: Iterable[EntryPoint] | None = None
) -> dict[str, ConnectorInfo]:
    """As :func:`load_connectors`, with each connector's entry point and distribution."""
    registered = _unique(list(entry_points(group=GROUP) if eps is None else eps))
    missing = (names or set()) - set(registered)
    if missing:
        raise ConnectorError(f"no connector registered for {sorted(missing)} (group {GROUP})")
    wanted = sorted(registered if names is None else names)
    loaded = {name: _load(registered[name]) for name in wanted}
    _check_city_codes(loaded)
    return loaded


def _unique(eps: list[EntryPoint]) -> dict[str, EntryPoint]:
    seen: dict[str, EntryPoint] = {}
    for ep in eps:
        if ep.name in seen and (seen[ep.name].value, _dist(seen[ep.name])) != (ep.value, _dist(ep)):
            raise ConnectorError(
                f"connector {ep.name!r} is registered twice: {seen[ep.name].value} "
                f"({_dist(seen[ep.name])}) and {ep.value} ({_dist(ep)})"
            )
        seen.setdefault(ep.name, ep)
    return seen


def _dist(ep: EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


def _load(ep: EntryPoint) -> ConnectorInfo:
    try:
        obj = ep.load()
    except Exception as exc:  # any import-time failure of a plug-in is that plug-in's fault
        raise ConnectorError(
            f"connector {ep.name!r} ({ep.value}) cannot be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    validate_connector(ep.name, obj)
    assert isinstance(obj, Connector)
    return ConnectorInfo(obj, ep.value, _dist(ep))


def validate_connector(name: str, obj: object) -> None:
    """Raise ConnectorError when ``obj`` is not a usable connector registered as ``name``."""
    if not isinstance(obj, Connector):
        missing = [m for m in _MEMBERS if not hasattr(obj, m)]
        raise ConnectorError(f"connector {name!r} is not a Connector: missing {missing}")
    for method in ("translate", "interpret", "token_request", "interpret_token"):
        if not callable(getattr(obj, method)):
            raise ConnectorError(f"connector {name!r}: {method} is not callable")
    if obj.name != name:
        raise ConnectorError(f"connector {name!r} calls itself {obj.name!r}: names must match")
    if not isinstance(obj.city_code, str) or not _CITY_CODE.match(obj.city_code):
        raise ConnectorError(f"connector {name!r}: city_code {obj.city_code!r} is not 6 digits")
    if not isinstance(obj.family, str) or not obj.family.strip():
        raise ConnectorError(f"connector {name!r}: family is empty")
    if obj.token_grant is not None and not isinstance(obj.token_grant, TokenGrant):
        raise ConnectorError(f"connector {name!r}: token_grant must be a TokenGrant or None")
    if not isinstance(obj.requires_client_cert, bool):
        raise ConnectorError(f"connector {name!r}: requires_client_cert must be a bool")
    policy = obj.transport
    if not isinstance(policy, TransportPolicy) or policy.min_tls not in TLS_VERSIONS:
        raise ConnectorError(
            f"connector {name!r}: transport must be a TransportPolicy with min_tls one of "
            f"{sorted(TLS_VERSIONS)}"
        )
    if policy.client_cert != obj.requires_client_cert:
        raise ConnectorError(
            f"connector {name!r}: requires_client_cert and transport.client_cert disagree"
        )


_MEMBERS = (
    "name",
    "city_code",
    "family",
    "token_grant",
    "requires_client_cert",
    "transport",
    "translate",
    "interpret",
    "token_request",
    "interpret_token",
)


def _check_city_codes(loaded: dict[str, ConnectorInfo]) -> None:
    by_code: dict[str, str] = {}
    for name, info in loaded.items():
        other = by_code.setdefault(info.connector.city_code, name)
        if other != name:
            raise ConnectorError(
                f"connectors {other!r} and {name!r} share city_code {info.connector.city_code}"
            )
    for name, info in loaded.items():
        _check_against_the_city_table(name, info.connector.city_code)


def _check_against_the_city_table(name: str, code: str) -> None:
    """A connector serves a green-channel city of the table (gateway/cities.py), and one named
    after a city of the table serves that city: the router escalates by the table's codes."""
    named = BY_KEY.get(name)
    if named is not None and named.code != code:
        raise ConnectorError(
            f"connector {name!r}: city_code {code}, but the city table gives {name} {named.code}"
        )
    city = BY_CODE.get(code)
    if city is None or not city.green_channel:
        what = "not in the city table" if city is None else f"{city.key}, without a green channel"
        raise ConnectorError(
            f"connector {name!r}: city_code {code} is {what} (gateway/cities.py): "
            "no complaint would be escalated to it"
        )
