"""Calls coming in from a trunk: recognising the provider, and whom its DID rings.

A provider does not answer our digest challenges (it holds no password of ours), so an INVITE from
a trunk is recognised by where it comes from instead: the source IP must be one of the trunk's
addresses (its host's, and its outbound proxy's), and over UDP the source port must be the trunk's
port as well (providers send from their SIP port; requiring it keeps a device on the same host,
such as a softphone next to a local PBX, from passing for the trunk). Over TCP the provider may
open a connection from any port, so the IP alone decides. Anything else is a stranger and is
challenged like one.

The DID is the Request-URI's user part when it is one of the trunk's numbers, else the To
header's (providers differ: some send to our registered Contact, with the number in To). An
INVITE from the trunk for a number it does not deliver gets 404.

The caller ID shown to our devices is the P-Asserted-Identity (RFC 3325; we trust it from the
trunk only, which is the only place it is read) or else the From header: its user part as the
number and its display name.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sip_core.headers import NameAddress
from sip_core.transport import TransportKind
from sip_core.trunk.config import TrunkTransport
from sip_core.trunk.nat import advertised_endpoint

if TYPE_CHECKING:
    from sip_core.config import PbxConfig
    from sip_core.dialog import LocalEndpoint
    from sip_core.message import Request
    from sip_core.transport import Source
    from sip_core.trunk.config import Trunk

__all__ = [
    "InboundCall",
    "InboundRefusal",
    "TrunkIngress",
    "is_trunk_device",
    "trunk_device",
]

_PREFIX = "trunk:"
#: Requests a provider sends outside a dialog (see `TrunkIngress.recognises`).
_PROVIDER_METHODS = frozenset({"INVITE", "ACK", "CANCEL", "OPTIONS"})


def trunk_device(name: str) -> str:
    """The name a trunk's leg goes by where a device username would stand (never a username:
    those cannot contain ':')."""
    return _PREFIX + name


def is_trunk_device(device: str | None) -> bool:
    return device is not None and device.startswith(_PREFIX)


@dataclass(frozen=True, slots=True)
class InboundCall:
    """An INVITE from ``trunk`` for ``did``: ring ``devices`` of ``callee_user``; show the caller
    as ``caller_number`` / ``caller_name``."""

    trunk: str
    did: str
    callee_user: str
    devices: tuple[str, ...]
    caller_number: str
    caller_name: str | None
    group: str | None = None  # a Personal Ring Group rings instead (its pilot's rules)


@dataclass(frozen=True, slots=True)
class InboundRefusal:
    """An INVITE from a trunk that cannot be delivered (an unknown DID: 404)."""

    trunk: str
    status: int
    reason: str


@functools.lru_cache(maxsize=1024)
def _ip_text(host: str) -> str | None:
    """``host``'s canonical text as an IP address, None when it is not one. Cached: every
    request's source is looked up several times (the guard, then call set-up), and parsing an
    address costs more than the rest of the lookup."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _is_ip(host: str) -> bool:
    return _ip_text(host) is not None


class TrunkIngress:
    """Tells INVITEs from trunks apart, and routes them by DID.

    ``addresses`` maps a host name to the IP addresses it resolved to (the facade resolves the
    trunks' host names when it starts); IP literals need no entry.
    """

    def __init__(
        self,
        config: Callable[[], PbxConfig],
        addresses: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self._config = config
        self.addresses: dict[str, frozenset[str]] = dict(addresses or {})

    def hosts_to_resolve(self) -> list[str]:
        """The trunks' host names that are not IP addresses."""
        trunking = self._config().trunking
        if trunking is None:
            return []
        names = {t.host for t in trunking.trunks} | {
            t.outbound_proxy.host for t in trunking.trunks if t.outbound_proxy is not None
        }
        return sorted(name for name in names if not _is_ip(name))

    def _ips(self, host: str) -> frozenset[str]:
        ip = _ip_text(host)
        if ip is not None:
            return frozenset({ip})
        return self.addresses.get(host, frozenset())

    def trunk_for(self, source: Source) -> Trunk | None:
        """The trunk ``source`` belongs to, or None for anyone else."""
        if _ip_text(source.remote.host) is None:
            return None
        return self._trunk_at(source)

    def _trunk_at(self, source: Source) -> Trunk | None:
        """The trunk whose host or outbound proxy is ``source.remote`` (an IP address, or the
        host name as configured: the B2BUA's outgoing legs name the next hop as written)."""
        trunking = self._config().trunking
        if trunking is None:
            return None
        remote = source.remote
        ip = _ip_text(remote.host)
        for trunk in trunking.trunks:
            hops = [(trunk.host, trunk.port)]
            if trunk.outbound_proxy is not None:
                hops.append((trunk.outbound_proxy.host, trunk.outbound_proxy.port))
            for host, port in hops:
                here = ip in self._ips(host) if ip is not None else remote.host == host
                if not here:
                    continue
                if trunk.transport is TrunkTransport.TLS and source.kind is not TransportKind.TLS:
                    continue  # a TLS trunk's provider never speaks to us in clear text
                if source.kind is not TransportKind.UDP or remote.port == port:
                    return trunk
        return None

    def is_provider(self, host: str) -> bool:
        """Whether ``host`` (an IP address) is one of a trunk's addresses, on any port: the
        guard never bans a provider (`sip_core.guard`)."""
        trunking = self._config().trunking
        if trunking is None:
            return False
        ip = _ip_text(host)
        if ip is None:
            return False
        for trunk in trunking.trunks:
            if ip in self._ips(trunk.host):
                return True
            if trunk.outbound_proxy is not None and ip in self._ips(trunk.outbound_proxy.host):
                return True
        return False

    def recognises(self, request: Request, source: Source) -> bool:
        """Whether ``request`` is one a provider sends us from its trunk's address: an INVITE
        (routed by DID), anything inside a dialog (BYE, re-INVITE, INFO...), ACK, CANCEL, or an
        OPTIONS keep-alive. The guard lets these through even from a public address while
        ``allow_public`` is off; a REGISTER or SUBSCRIBE from the same address is not a
        provider's business and is treated like anyone's."""
        if request.method not in _PROVIDER_METHODS:
            try:
                in_dialog = bool(request.to.tag)
            except ValueError:
                in_dialog = False
            if not in_dialog:
                return False
        return self.trunk_for(source) is not None

    def endpoint_for(self, source: Source, local_port: int) -> LocalEndpoint | None:
        """Our Via and Contact towards ``source`` when it is a trunk with a ``public_address``
        (`sip_core.trunk.nat`); None: the usual ones."""
        trunk = self._trunk_at(source)
        if trunk is None:
            return None
        return advertised_endpoint(trunk, local_port, source.kind)

    def route(self, request: Request, source: Source) -> InboundCall | InboundRefusal | None:
        """Where an INVITE from a trunk goes; None when it does not come from a trunk."""
        trunk = self.trunk_for(source)
        if trunk is None:
            return None
        numbers = {did.number: did for did in trunk.dids}
        candidates = [request.uri.user_unescaped]
        with contextlib.suppress(ValueError):
            candidates.append(request.to.uri.user_unescaped)
        did = next((numbers[c] for c in candidates if c and c in numbers), None)
        if did is None:
            return InboundRefusal(trunk.name, 404, "unknown number")
        config = self._config()
        number, name = _caller(request)
        if did.group is not None:
            group = config.group(did.group)
            if group is None:  # the configuration changed under the trunk's DIDs
                return InboundRefusal(trunk.name, 404, "unknown number")
            return InboundCall(trunk.name, did.number, "", (), number, name, group=group.name)
        user = next((u for u in config.users if u.name == did.destination), None)
        if user is not None:
            devices = tuple(device.username for device in user.devices)
        else:
            user = config.user_for_device(did.destination)
            if user is None:  # the configuration changed under the trunk's DIDs
                return InboundRefusal(trunk.name, 404, "unknown number")
            devices = (did.destination,)
        return InboundCall(trunk.name, did.number, user.name, devices, number, name)


def _caller(request: Request) -> tuple[str, str | None]:
    """The caller's number and display name: P-Asserted-Identity, else From."""
    for value in request.headers.get_all("P-Asserted-Identity"):
        try:
            identity = NameAddress.parse(value)
        except ValueError:
            continue
        number = _number_of(identity)
        if number:
            return number, identity.display_name
    try:
        sender = request.from_
    except ValueError:
        return "anonymous", None
    return _number_of(sender) or "anonymous", sender.display_name


_NOT_IN_NUMBER = re.compile(r"[^A-Za-z0-9+._-]")


def _number_of(address: NameAddress) -> str | None:
    """The user part (or tel: number), kept to characters that need no escaping in a SIP URI."""
    uri = address.uri
    if uri.scheme == "tel":
        raw = uri.opaque.split(";", 1)[0] if uri.opaque else None
    else:
        try:
            raw = uri.user_unescaped
        except ValueError:
            raw = uri.user
    return _NOT_IN_NUMBER.sub("", raw)[:64] or None if raw else None
