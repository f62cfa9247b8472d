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
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sip_core.headers import NameAddress
from sip_core.transport import TransportKind

if TYPE_CHECKING:
    from sip_core.config import PbxConfig
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


@dataclass(frozen=True, slots=True)
class InboundRefusal:
    """An INVITE from a trunk that cannot be delivered (an unknown DID: 404)."""

    trunk: str
    status: int
    reason: str


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


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
        if _is_ip(host):
            return frozenset({str(ipaddress.ip_address(host))})
        return self.addresses.get(host, frozenset())

    def trunk_for(self, source: Source) -> Trunk | None:
        """The trunk ``source`` belongs to, or None for anyone else."""
        trunking = self._config().trunking
        if trunking is None:
            return None
        remote = source.remote
        try:
            ip = str(ipaddress.ip_address(remote.host))
        except ValueError:
            return None
        for trunk in trunking.trunks:
            hops = [(trunk.host, trunk.port)]
            if trunk.outbound_proxy is not None:
                hops.append((trunk.outbound_proxy.host, trunk.outbound_proxy.port))
            for host, port in hops:
                if ip in self._ips(host) and (
                    source.kind is TransportKind.TCP or remote.port == port
                ):
                    return trunk
        return None

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
        user = next((u for u in config.users if u.name == did.destination), None)
        if user is not None:
            devices = tuple(device.username for device in user.devices)
        else:
            user = config.user_for_device(did.destination)
            if user is None:  # the configuration changed under the trunk's DIDs
                return InboundRefusal(trunk.name, 404, "unknown number")
            devices = (did.destination,)
        number, name = _caller(request)
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
