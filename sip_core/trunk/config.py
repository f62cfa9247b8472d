"""The trunks' part of the configuration: the model, and its checks with field errors.

In the file (``pbx.example.yaml`` documents every key)::

    trunks:
      - name: provider
        host: sip.provider.example      # registrar and proxy
        port: 5060                      # default: 5061 with tls
        transport: udp                  # udp, tcp or tls
        ca_file: /etc/ssl/provider.pem  # tls only, optional: trust these CAs, not the system's
        verify: true                    # tls only: check the provider's certificate and name
        username: "4930123456"
        auth_username: "4930123456"     # default: username
        password: "..."
        realm: sip.provider.example     # optional: answer challenges for this realm only
        domain: sip.provider.example    # default: host; the domain of our address there
        outbound_proxy: proxy.example:5060   # optional
        public_address: 203.0.113.7     # optional (NAT): our address as the provider sees it
        register: true
        register_interval: 600
        caller_id: "+4930123456"        # default: username
        dids:
          - {number: "+4930123456", destination: alice}   # a user's name or a device username
          - {number: "+4930123457", destination: "group:Home"}   # a Personal Ring Group
    dialplan:
      routes:
        - {prefix: "0", trunk: provider, strip: true}
        - {external: true, trunk: provider}   # anything that is not an internal number
      emergency: ["112", "110"]
      emergency_trunk: provider               # default: the first trunk
      call_out: [alice]                       # users who may call out; default: every user

Why the checks are strict: a trunk costs money and a provider may ban an address that fails too
often, so a typo must be refused at load time, not discovered as a string of 403s. A prefix route
must not capture an internal number (``prefix: "2"`` with extension ``200`` would send calls to a
colleague out to the provider), and an emergency number must never be an internal number.

``public_address`` is for a PBX behind NAT whose provider is on the other side (the internet):
the address (and, after a colon, the port when the router forwards another one) that the
provider can reach, advertised in the Via sent-by, the Contact and the SDP connection address of
everything sent towards that trunk. It must be an IP address: SDP connection addresses are
addresses, and a name would have to be resolved again whenever it changes. Without it we
advertise the address we send from, which is right when the provider is on the same network
(a router or PBX in the house) or when the router rewrites SIP itself (an "ALG").

``transport: tls`` connects to the provider over TLS (`sip_core.tls`): its certificate must
chain to the system's trusted authorities, or to those in ``ca_file`` (PEM) when it is given, and
name the host we connect to (``host``, or the outbound proxy's). A ``ca_file`` that cannot be
read or holds no certificate is refused here, naming the key. ``verify: false`` turns the checks
off (for a router in the house with a self-signed certificate): the line is encrypted but anyone
on the path could pose as the provider, so it is never the default.

This module builds on ``sip_core.config``'s checking helpers; ``sip_core.config`` calls
:func:`trunking_from_mapping` when the file has a ``trunks`` section.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from sip_core.config import (
    REDACTED,
    KeyPath,
    User,
    _describe,
    _domain,
    _fail,
    _int,
    _list,
    _member,
    _name,
    _section,
    _text,
    format_path,
)
from sip_core.tls import DEFAULT_TLS_PORT, TlsSetupError, client_context
from sip_core.transport import TransportKind

__all__ = [
    "DEFAULT_EMERGENCY",
    "GROUP_DESTINATION",
    "DialPlan",
    "Did",
    "HostPort",
    "OutboundRoute",
    "PublicAddress",
    "Trunk",
    "TrunkTransport",
    "Trunking",
    "trunking_from_mapping",
]

#: Emergency numbers dialled when the configuration names none: the European and the North
#: American one. Always allowed out, whoever dials them.
DEFAULT_EMERGENCY: Final = ("112", "911")
DEFAULT_REGISTER_INTERVAL: Final = 600
#: How a DID's destination names a Personal Ring Group: ``group:<name>``.
GROUP_DESTINATION: Final = "group:"
_NUMBER: Final = re.compile(r"\+?[0-9A-Za-z*#._-]{1,64}")
_PREFIX: Final = re.compile(r"[0-9*#+]{1,16}")
_TRUNK_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
_HOST_PORT: Final = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>\d{1,5}))?"
)


class TrunkTransport(StrEnum):
    """How we reach the provider."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"

    @property
    def kind(self) -> TransportKind:
        """The transport layer's name for it (the Via token)."""
        return TransportKind(self.value.upper())


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PublicAddress:
    """What we advertise towards a trunk behind NAT: ``host`` (an IP address) and ``port``
    (None: our own SIP port, for a router forwarding the same port)."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Did:
    """A number the trunk delivers, and who rings for it: a user's name, a device username, or
    ``group:<name>``, a Personal Ring Group (its calls ring as its pilot's: present, available
    members for the group's ring timer, then its no-answer destination)."""

    number: str
    destination: str

    @property
    def group(self) -> str | None:
        """The group's name when the destination is a Personal Ring Group, else None."""
        kind, sep, name = self.destination.partition(GROUP_DESTINATION)
        return name if sep and not kind else None


@dataclass(frozen=True, slots=True)
class Trunk:
    """One account at a provider (or at the router or PBX that holds the phone line)."""

    name: str
    host: str
    username: str
    password: str
    port: int = 5060
    transport: TrunkTransport = TrunkTransport.UDP
    auth_username: str = ""
    realm: str | None = None
    domain: str = ""
    outbound_proxy: HostPort | None = None
    register: bool = True
    register_interval: int = DEFAULT_REGISTER_INTERVAL
    caller_id: str = ""
    dids: tuple[Did, ...] = ()
    public_address: PublicAddress | None = None
    ca_file: str | None = None
    verify: bool = True

    @property
    def auth_user(self) -> str:
        """The username for digest: ``auth_username``, else ``username``."""
        return self.auth_username or self.username

    @property
    def aor_domain(self) -> str:
        """The domain of our address at the provider: ``domain``, else ``host``."""
        return self.domain or self.host

    @property
    def presented_id(self) -> str:
        """The caller ID we send on outgoing calls: ``caller_id``, else ``username``."""
        return self.caller_id or self.username

    @property
    def next_hop(self) -> HostPort:
        """Where requests to the provider go: the outbound proxy if there is one."""
        return self.outbound_proxy or HostPort(self.host, self.port)

    def to_mapping(self, *, redact: bool = False) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "transport": self.transport.value,
            "username": self.username,
            "auth_username": self.auth_user,
            "password": REDACTED if redact else self.password,
            "realm": self.realm,
            "domain": self.aor_domain,
            "outbound_proxy": None if self.outbound_proxy is None else str(self.outbound_proxy),
            "register": self.register,
            "register_interval": self.register_interval,
            "caller_id": self.presented_id,
            "dids": [{"number": d.number, "destination": d.destination} for d in self.dids],
            "public_address": None if self.public_address is None else str(self.public_address),
            "ca_file": self.ca_file,
            "verify": self.verify,
        }


@dataclass(frozen=True, slots=True)
class OutboundRoute:
    """A dial-plan rule: numbers starting with ``prefix`` (``None``: any number that is not
    internal) go out through ``trunk``; ``strip`` removes the prefix before sending."""

    trunk: str
    prefix: str | None = None
    strip: bool = False

    def matches(self, dialled: str, *, internal: bool) -> bool:
        if self.prefix is None:
            return not internal
        return dialled.startswith(self.prefix) and len(dialled) > len(self.prefix)

    def number(self, dialled: str) -> str:
        if self.strip and self.prefix is not None:
            return dialled[len(self.prefix) :]
        return dialled

    def to_mapping(self) -> dict[str, Any]:
        if self.prefix is None:
            return {"external": True, "trunk": self.trunk}
        return {"prefix": self.prefix, "trunk": self.trunk, "strip": self.strip}


@dataclass(frozen=True, slots=True)
class OutboundCall:
    """Where a dialled number goes out: through ``trunk``, as ``number``."""

    trunk: str
    number: str
    emergency: bool


@dataclass(frozen=True, slots=True)
class DialPlan:
    """Which dialled numbers leave through which trunk, and who may call out.

    ``call_out``: the users (by name) who may call out; ``None`` is every user. Emergency numbers
    are allowed to everyone, through ``emergency_trunk``.
    """

    routes: tuple[OutboundRoute, ...] = ()
    emergency: tuple[str, ...] = DEFAULT_EMERGENCY
    emergency_trunk: str = ""
    call_out: tuple[str, ...] | None = None

    def outbound(self, dialled: str, *, internal: bool) -> OutboundCall | None:
        """Where ``dialled`` goes out (``internal``: it names an extension, device or code);
        ``None`` when no rule sends it out."""
        if dialled in self.emergency and self.emergency_trunk:
            return OutboundCall(self.emergency_trunk, dialled, emergency=True)
        for route in self.routes:
            if route.matches(dialled, internal=internal):
                number = route.number(dialled)
                return OutboundCall(route.trunk, number, emergency=number in self.emergency)
        return None

    def may_call_out(self, user: str | None, call: OutboundCall) -> bool:
        """Whether ``user`` (a user's name; ``None`` for a caller who is nobody's device) may
        place ``call``. Emergency calls always may."""
        if call.emergency:
            return True
        if user is None:
            return False
        return self.call_out is None or user in self.call_out

    def to_mapping(self) -> dict[str, Any]:
        return {
            "routes": [route.to_mapping() for route in self.routes],
            "emergency": list(self.emergency),
            "emergency_trunk": self.emergency_trunk,
            "call_out": None if self.call_out is None else list(self.call_out),
        }


@dataclass(frozen=True, slots=True)
class Trunking:
    """Every trunk and the dial plan."""

    trunks: tuple[Trunk, ...]
    dialplan: DialPlan

    def trunk(self, name: str) -> Trunk | None:
        for trunk in self.trunks:
            if trunk.name == name:
                return trunk
        return None

    def did(self, number: str) -> tuple[Trunk, Did] | None:
        """The trunk that delivers ``number`` and its DID entry."""
        for trunk in self.trunks:
            for did in trunk.dids:
                if did.number == number:
                    return trunk, did
        return None

    def to_mapping(self, *, redact: bool = False) -> dict[str, Any]:
        return {
            "trunks": [trunk.to_mapping(redact=redact) for trunk in self.trunks],
            "dialplan": self.dialplan.to_mapping(),
        }


# --- loading -------------------------------------------------------------------------------------

_TRUNK_KEYS: Final = (
    "name",
    "host",
    "port",
    "transport",
    "username",
    "auth_username",
    "password",
    "realm",
    "domain",
    "outbound_proxy",
    "register",
    "register_interval",
    "caller_id",
    "dids",
    "public_address",
    "ca_file",
    "verify",
)


def trunking_from_mapping(
    trunks_data: Any,
    dialplan_data: Any,
    users: Sequence[User],
    internal: Sequence[str],
    *,
    groups: Sequence[str] = (),
) -> Trunking | None:
    """Check the ``trunks`` and ``dialplan`` sections; ``None`` when there are no trunks.

    ``internal`` are the numbers that ring inside (extensions, device usernames, feature codes):
    a prefix route may not capture them, and no emergency number may be one of them. ``groups``
    are the Personal Ring Groups' names a DID may ring (``group:<name>``).
    """
    items = _list(trunks_data, ("trunks",), "trunks")
    if not items:
        if dialplan_data is not None:
            _fail(("dialplan",), "there is no trunk to dial out through: add a trunks section")
        return None
    destinations = _destinations(users) | {f"{GROUP_DESTINATION}{name}" for name in groups}
    trunks: list[Trunk] = []
    names: dict[str, KeyPath] = {}
    numbers: dict[str, KeyPath] = {}
    for index, item in enumerate(items):
        trunk = _trunk(item, ("trunks", index), users, destinations, numbers)
        previous = names.setdefault(trunk.name.casefold(), ("trunks", index, "name"))
        if previous != ("trunks", index, "name"):
            _fail(
                ("trunks", index, "name"),
                f"{trunk.name!r} is already used by {format_path(previous)}",
            )
        trunks.append(trunk)
    dialplan = _dialplan(dialplan_data, trunks, users, internal)
    return Trunking(tuple(trunks), dialplan)


def _destinations(users: Sequence[User]) -> set[str]:
    return {user.name for user in users} | {d.username for user in users for d in user.devices}


def _bool(section: Mapping[str, Any], key: str, path: KeyPath, default: bool) -> bool:
    value = section.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        _fail((*path, key), f"must be true or false, not {_describe(value)}")
    return value


def _number(value: str, path: KeyPath) -> str:
    if not _NUMBER.fullmatch(value):
        _fail(
            path, f"must be a phone number or SIP user name (digits, '+', letters), not {value!r}"
        )
    return value


def _host_port(value: str, path: KeyPath) -> HostPort:
    match = _HOST_PORT.fullmatch(value.strip())
    if match is None:
        _fail(path, f"must be host or host:port (IPv6 in brackets), not {value!r}")
    host = _domain(match.group("v6") or match.group("host"), path)
    port = int(match.group("port") or 5060)
    if not 1 <= port <= 65535:
        _fail(path, f"the port must be between 1 and 65535, not {port}")
    return HostPort(host, port)


def _public_address(value: str, path: KeyPath) -> PublicAddress:
    with contextlib.suppress(ValueError):  # a bare IPv6 address: no port
        return _public_address(f"[{ipaddress.IPv6Address(value.strip())}]", path)
    match = _HOST_PORT.fullmatch(value.strip())
    host = (match.group("v6") or match.group("host")) if match is not None else None
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        _fail(path, f"must be an IP address, optionally with :port, not {value!r}")
    if address.is_unspecified or address.is_multicast:
        _fail(path, f"must be an address the provider can send to, not {value!r}")
    assert match is not None
    port = None if match.group("port") is None else int(match.group("port"))
    if port is not None and not 1 <= port <= 65535:
        _fail(path, f"the port must be between 1 and 65535, not {port}")
    return PublicAddress(str(address), port)


def _trunk(
    data: Any,
    path: KeyPath,
    users: Sequence[User],
    destinations: set[str],
    numbers: dict[str, KeyPath],
) -> Trunk:
    section = _section(data, path, _TRUNK_KEYS, required=True)
    name = _text(section, "name", path)
    if not _TRUNK_NAME.fullmatch(name):
        _fail((*path, "name"), f"use 1 to 32 letters, digits, '_' or '-', not {name!r}")
    host = _domain(_text(section, "host", path), (*path, "host"))
    transport = TrunkTransport.UDP
    if section.get("transport") is not None:
        transport = _member(section["transport"], (*path, "transport"), TrunkTransport)
    default_port = DEFAULT_TLS_PORT if transport is TrunkTransport.TLS else 5060
    port = _int(section, "port", path, default_port, (1, 65535))
    verify = _bool(section, "verify", path, True)
    ca_file = _ca_file(section, path, transport, verify=verify)
    username = _number(_text(section, "username", path, numbers=True), (*path, "username"))
    auth_username = _text(section, "auth_username", path, default=username, numbers=True)
    if _CONTROL_OR_QUOTE.search(auth_username):
        _fail((*path, "auth_username"), "must not contain control characters or quotes")
    password = _text(section, "password", path, numbers=True)
    realm = None
    if section.get("realm") is not None:
        realm = _name(_text(section, "realm", path), (*path, "realm"))
    domain = host
    if section.get("domain") is not None:
        domain = _domain(_text(section, "domain", path), (*path, "domain"))
    proxy = None
    if section.get("outbound_proxy") is not None:
        proxy = _host_port(_text(section, "outbound_proxy", path), (*path, "outbound_proxy"))
    register = _bool(section, "register", path, True)
    interval = _int(section, "register_interval", path, DEFAULT_REGISTER_INTERVAL, (60, 86400))
    caller_id = _number(
        _text(section, "caller_id", path, default=username, numbers=True), (*path, "caller_id")
    )
    dids: list[Did] = []
    for index, item in enumerate(_list(section.get("dids"), (*path, "dids"), "DIDs")):
        where: KeyPath = (*path, "dids", index)
        did_data = _section(item, where, ("number", "destination"), required=True)
        number = _number(_text(did_data, "number", where, numbers=True), (*where, "number"))
        previous = numbers.setdefault(number, (*where, "number"))
        if previous != (*where, "number"):
            _fail((*where, "number"), f"{number!r} is already delivered by {format_path(previous)}")
        if not users:
            _fail((*where, "destination"), "there is no user to ring: add a user first")
        destination = _text(did_data, "destination", where, default=users[0].name, numbers=True)
        if destination.startswith(GROUP_DESTINATION) and destination not in destinations:
            _fail(
                (*where, "destination"),
                f"no group is called {destination.removeprefix(GROUP_DESTINATION)!r}",
            )
        if destination not in destinations:
            _fail(
                (*where, "destination"),
                f"must be a user's name or a device's username ('group:<name>' for a "
                f"Personal Ring Group), not {destination!r}",
            )
        dids.append(Did(number, destination))
    public = None
    if section.get("public_address") is not None:
        public = _public_address(_text(section, "public_address", path), (*path, "public_address"))
    return Trunk(
        name=name,
        host=host,
        username=username,
        password=password,
        port=port,
        transport=transport,
        auth_username=auth_username,
        realm=realm,
        domain=domain,
        outbound_proxy=proxy,
        register=register,
        register_interval=interval,
        caller_id=caller_id,
        dids=tuple(dids),
        public_address=public,
        ca_file=ca_file,
        verify=verify,
    )


def _ca_file(
    section: Mapping[str, Any], path: KeyPath, transport: TrunkTransport, *, verify: bool
) -> str | None:
    """The trunk's CA file, loaded once here so that a bad one is refused with its key."""
    if section.get("ca_file") is None:
        return None
    where: KeyPath = (*path, "ca_file")
    value = _text(section, "ca_file", path)
    if transport is not TrunkTransport.TLS:
        _fail(where, "is only used with transport: tls")
    if not verify:
        _fail(where, "is not used with verify: false (nothing is checked)")
    if not value.startswith("/"):
        _fail(where, f"must be an absolute path to a PEM file, not {value!r}")
    try:
        client_context(value)
    except TlsSetupError as exc:
        _fail(where, str(exc))
    return value


_CONTROL_OR_QUOTE: Final = re.compile(r'[\x00-\x1f\x7f"\\]')


def _dialplan(
    data: Any, trunks: Sequence[Trunk], users: Sequence[User], internal: Sequence[str]
) -> DialPlan:
    path: KeyPath = ("dialplan",)
    section = _section(data, path, ("routes", "emergency", "emergency_trunk", "call_out"))
    names = {trunk.name for trunk in trunks}
    internal_set = set(internal)

    def trunk_name(value: Any, where: KeyPath) -> str:
        if not isinstance(value, str) or value not in names:
            _fail(
                where,
                f"must name a configured trunk ({', '.join(sorted(names))}),"
                f" not {_describe(value)}",
            )
        return value

    routes: list[OutboundRoute] = []
    for index, item in enumerate(_list(section.get("routes"), (*path, "routes"), "routes")):
        where: KeyPath = (*path, "routes", index)
        route = _section(item, where, ("prefix", "external", "trunk", "strip"), required=True)
        trunk = trunk_name(route.get("trunk"), (*where, "trunk"))
        external = _bool(route, "external", where, False)
        if external == ("prefix" in route and route["prefix"] is not None):
            _fail(where, "give either a prefix or external: true")
        if external:
            if "strip" in route:
                _fail((*where, "strip"), "only a prefix route can strip its prefix")
            routes.append(OutboundRoute(trunk))
            continue
        prefix = _text(route, "prefix", where, numbers=True)
        if not _PREFIX.fullmatch(prefix):
            _fail((*where, "prefix"), f"must be 1 to 16 keypad keys (0-9, *, #, +), not {prefix!r}")
        captured = sorted(number for number in internal_set if number.startswith(prefix))
        if captured:
            _fail((*where, "prefix"), f"would send the internal number {captured[0]!r} out")
        routes.append(OutboundRoute(trunk, prefix, _bool(route, "strip", where, False)))

    emergency: tuple[str, ...] = DEFAULT_EMERGENCY
    raw = section.get("emergency")
    if raw is not None:
        emergency_list: list[str] = []
        for index, value in enumerate(_list(raw, (*path, "emergency"), "numbers")):
            where = (*path, "emergency", index)
            text = value
            if isinstance(value, int) and not isinstance(value, bool):
                text = str(value)
            if not isinstance(text, str) or not _PREFIX.fullmatch(text):
                _fail(where, f"must be a number such as 112, not {_describe(value)}")
            emergency_list.append(text)
        emergency = tuple(emergency_list)
    for index, number in enumerate(emergency):
        if number in internal_set:
            _fail((*path, "emergency", index), f"{number!r} is also an internal number")
    emergency_trunk = trunks[0].name
    if section.get("emergency_trunk") is not None:
        emergency_trunk = trunk_name(section["emergency_trunk"], (*path, "emergency_trunk"))

    call_out: tuple[str, ...] | None = None
    if section.get("call_out") is not None:
        known = {user.name for user in users}
        allowed: list[str] = []
        for index, value in enumerate(
            _list(section["call_out"], (*path, "call_out"), "user names")
        ):
            if not isinstance(value, str) or value not in known:
                _fail((*path, "call_out", index), f"must be a user's name, not {_describe(value)}")
            allowed.append(value)
        call_out = tuple(allowed)
    return DialPlan(tuple(routes), emergency, emergency_trunk, call_out)
