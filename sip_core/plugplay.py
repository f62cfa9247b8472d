"""SIP plug-and-play: hear desk phones ask for their profile at boot, answer only when adopted.

At boot almost every desk phone (Snom, Yealink, Grandstream, Gigaset, Panasonic, Fanvil,
AudioCodes ...) multicasts a SUBSCRIBE for the ``ua-profile`` event package (RFC 6080) to
224.0.1.75:5060 and waits a few seconds, retransmitting, for someone to answer 200 and send a
NOTIFY whose ``application/url`` body says where to fetch its configuration. The SUBSCRIBE names
the phone: the Event header's ``vendor``, ``model`` and ``version`` parameters, the MAC address
in the Request-URI or From user part (``MAC%3a000413abcdef``, ``MAC=00304fa99948`` or the bare
digits), and a User-Agent.

`PlugAndPlay.handle` records every such SUBSCRIBE in the `PhoneDirectory` and, by default, does
nothing else: the transaction is dropped unanswered, because another PBX on the network may own
the phone. Only a phone the user adopted (`Provisioner.arm`, bound to its MAC and address) gets
200 and one NOTIFY with the URL of its configuration file; the phone answers the NOTIFY with 200,
fetches the file and reboots into its account.

`MulticastListener` is the socket that hears the group: its own UDP socket bound to the group
address and port 5060, joined on the interface the PBX listens on. When the PBX itself listens on
every address on port 5060, no second socket can bind that port, so the PBX's own socket joins
the group instead (`TransportLayer.join_multicast`). Either way the SUBSCRIBE then travels the
ordinary path (transport, transaction layer, `Pbx`) and answers leave from the PBX's port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .clock import Clock
from .dialog import LocalEndpoint, build_request
from .message import Request, Response, make_response, new_call_id, new_tag
from .phones import DiscoverySource, PhoneDirectory, Sighting
from .provisioning import Adoption, Provisioner, format_for
from .transaction import ServerTransaction
from .transport import Address, Source, TransportKind
from .uri import SipUri
from .useragent import PhoneIdentity, find_mac, normalise_mac, parse_user_agent, vendor_name

__all__ = [
    "PNP_GROUP",
    "PNP_PORT",
    "MulticastListener",
    "PlugAndPlay",
    "UaProfileSubscribe",
    "is_ua_profile",
    "parse_event",
    "parse_ua_profile",
]

_LOGGER = logging.getLogger(__name__)

PNP_GROUP: Final = "224.0.1.75"
"""The "SIP" multicast group (IANA), where RFC 6080 plug-and-play SUBSCRIBEs go."""
PNP_PORT: Final = 5060

_MAC_USER: Final = re.compile(r"^(?:mac[:=%]?(?:3a)?)?([0-9a-f:.\-]{12,17})$", re.IGNORECASE)
_UNSPECIFIED: Final = frozenset({"0.0.0.0", "::", ""})


def parse_event(value: str) -> tuple[str, dict[str, str]]:
    """An Event header value as (package, parameters): quotes removed, names lower-cased."""
    parts = _split_params(value)
    package = parts[0].strip().lower() if parts else ""
    params: dict[str, str] = {}
    for part in parts[1:]:
        name, _, raw = part.partition("=")
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace('\\"', '"')
        if name.strip():
            params[name.strip().lower()] = raw
    return package, params


def _split_params(value: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def is_ua_profile(request: Request) -> bool:
    """Whether this is a SUBSCRIBE for the ua-profile event package."""
    if request.method != "SUBSCRIBE":
        return False
    event = request.headers.get("Event")
    return event is not None and parse_event(event)[0] == "ua-profile"


@dataclass(frozen=True, slots=True)
class UaProfileSubscribe:
    """What a plug-and-play SUBSCRIBE tells about the phone that sent it."""

    profile_type: str | None
    vendor: str | None
    identity: PhoneIdentity
    user_agent: str | None


def parse_ua_profile(request: Request) -> UaProfileSubscribe | None:
    """Read a ua-profile SUBSCRIBE; None when the request is not one."""
    if not is_ua_profile(request):
        return None
    _, params = parse_event(request.headers.get("Event") or "")
    user_agent = request.headers.get("User-Agent")
    from_agent = parse_user_agent(user_agent)
    mac = _mac_of(request) or from_agent.mac
    vendor = params.get("vendor") or None
    model = params.get("model") or from_agent.model
    if vendor and model and model.lower().startswith(vendor.lower()) and len(model) > len(vendor):
        model = model[len(vendor) :].lstrip(" -_")  # "snomD785" with vendor "snom": "D785"
    identity = PhoneIdentity(
        manufacturer=vendor_name(vendor) or vendor or from_agent.manufacturer,
        model=model.upper() if model and vendor_name(vendor) == "Snom" else model,
        firmware=params.get("version") or from_agent.firmware,
        mac=mac,
    )
    return UaProfileSubscribe(params.get("profile-type"), vendor, identity, user_agent)


def _mac_of(request: Request) -> str | None:
    """The MAC in the Request-URI, From or To user part (RFC 6080 §4.1 leaves the shape open)."""
    candidates: list[SipUri] = [request.uri]
    with contextlib.suppress(ValueError):
        candidates.append(request.from_.uri)
    with contextlib.suppress(ValueError):
        candidates.append(request.to.uri)
    for uri in candidates:
        user = uri.user_unescaped if uri.user else None
        if not user:
            continue
        match = _MAC_USER.match(user.strip())
        if match is not None:
            mac = normalise_mac(match.group(1))
            if mac is not None:
                return mac
        found = find_mac(user)
        if found is not None:
            return found
    return None


NotifySender = Callable[[Request, Address, Callable[[Response], None], Callable[[], None]], None]
"""Sends a request in a client transaction (the PBX's transaction layer): request, destination,
on_response, on_timeout."""


class PlugAndPlay:
    """Records plug-and-play SUBSCRIBEs and answers those of adopted phones (module docstring).

    ``url_base(local_host)`` gives the URL the token's path is appended to (Home Assistant's
    provisioning view, or the runner's HTTP server; ``local_host`` is our address as the phone
    sees it), or None while nothing serves the files: then nobody is answered, adopted or not.
    ``standing`` maps MAC addresses to device usernames to adopt as soon as they ask (the
    runner's ``discovery.provision``); each is provisioned once per run.
    """

    def __init__(
        self,
        clock: Clock,
        directory: PhoneDirectory,
        provisioner: Provisioner,
        *,
        send_request: NotifySender,
        respond: Callable[[ServerTransaction, Response], None],
        local_port: Callable[[], int],
        url_base: Callable[[str], str | None],
        standing: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self._clock = clock
        self._directory = directory
        self._provisioner = provisioner
        self._send_request = send_request
        self._respond = respond
        self._local_port = local_port
        self.url_base = url_base
        self._standing = standing
        self._standing_done: set[str] = set()
        self._hosts: dict[str, str] = {}

    def handle(self, request: Request, txn: ServerTransaction, source: Source) -> None:
        """A ua-profile SUBSCRIBE arrived (over the group or directly)."""
        try:
            found = parse_ua_profile(request)
        except ValueError as err:  # an unreadable From/To: not worth an answer
            _LOGGER.debug("Unreadable plug-and-play SUBSCRIBE from %s: %s", source.remote, err)
            txn.forget()
            return
        if found is None:
            txn.forget()
            return
        host = source.remote.host
        self._directory.observe(
            Sighting(
                DiscoverySource.PLUG_AND_PLAY,
                host,
                found.identity,
                port=source.remote.port,
                user_agent=found.user_agent,
                vendor=found.vendor,
            )
        )
        mac = found.identity.mac
        adoption = self._provisioner.pending(mac, host) if mac else None
        if adoption is None and mac is not None:
            adoption = self._standing_adoption(mac, host, found, source)
        if adoption is None:
            # Observe only: another PBX may own this phone.
            txn.forget()
            return
        base = self.url_base(self.local_host(source))
        if not base:
            _LOGGER.warning(
                "Phone %s asked for its profile, but no provisioning URL is known: not answered",
                mac,
            )
            txn.forget()
            return
        self._adopt(request, txn, source, adoption, base)

    def _standing_adoption(
        self, mac: str, host: str, found: UaProfileSubscribe, source: Source
    ) -> Adoption | None:
        username = self._standing().get(mac)
        if username is None or mac in self._standing_done:
            return None
        self._standing_done.add(mac)
        config_format = format_for(found.vendor or found.identity.manufacturer)
        if config_format is None:
            _LOGGER.warning(
                "Phone %s (%s) is to be provisioned as %s, but its vendor's files are not "
                "supported: configure it by hand",
                mac,
                found.identity.describe(),
                username,
            )
            return None
        return self._provisioner.arm(
            mac=mac,
            host=host,
            username=username,
            config_format=config_format,
            server_host=self.local_host(source),
            server_port=self._local_port(),
        )

    def local_host(self, source: Source) -> str:
        """Our address as the phone should see it (Via, Contact, the file's server)."""
        host = source.local.host
        if host in _UNSPECIFIED or _is_multicast(host):
            host = self.route_host(source.remote.host)
        return host

    def route_host(self, remote: str) -> str:
        """Our address on the route to ``remote`` (a connected UDP socket sends nothing)."""
        cached = self._hosts.get(remote)
        if cached is not None:
            return cached
        host = "127.0.0.1"
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe,
        ):
            probe.connect((remote, 9))
            host = str(probe.getsockname()[0])
        self._hosts[remote] = host
        return host

    def _adopt(
        self,
        request: Request,
        txn: ServerTransaction,
        source: Source,
        adoption: Adoption,
        base: str,
    ) -> None:
        endpoint = LocalEndpoint(self.local_host(source), self._local_port(), TransportKind.UDP)
        local_tag = new_tag()
        response = make_response(request, 200, to_tag=local_tag)
        response.headers.set("Expires", "0")
        response.headers.set("Contact", endpoint.contact)
        self._respond(txn, response)
        url = base.rstrip("/") + "/" + adoption.url_path()
        notify = self._notify(request, source, endpoint, local_tag, url)
        destination = self._destination(request, source)

        def on_response(answer: Response) -> None:
            if answer.status >= 200:
                _LOGGER.info(
                    "Phone %s took the provisioning URL (%d %s)",
                    adoption.mac,
                    answer.status,
                    answer.reason,
                )

        def on_timeout() -> None:
            _LOGGER.warning("Phone %s did not answer the provisioning NOTIFY", adoption.mac)

        self._send_request(notify, destination, on_response, on_timeout)
        self._provisioner.notified(adoption)
        _LOGGER.info("Answered the plug-and-play request of %s at %s", adoption.mac, source.remote)

    @staticmethod
    def _destination(request: Request, source: Source) -> Address:
        """The SUBSCRIBE's Contact (the dialog's remote target), else where it came from."""
        with contextlib.suppress(ValueError, IndexError):
            contacts = request.contacts
            if contacts:
                uri = contacts[0].uri
                return Address(uri.host.strip("[]"), uri.port or PNP_PORT)
        return source.remote

    def _notify(
        self, request: Request, source: Source, endpoint: LocalEndpoint, local_tag: str, url: str
    ) -> Request:
        """The NOTIFY of RFC 6080 §5.2 (within the dialog the 200 made, RFC 6665 §4.2.2)."""
        target = self._destination(request, source)
        remote_uri = SipUri.parse(f"sip:{target.host}:{target.port}")
        with contextlib.suppress(ValueError, IndexError):
            contacts = request.contacts
            if contacts:
                remote_uri = contacts[0].uri.copy()
        to_value = request.headers.get("From") or ""
        from_value = f"{_without_tag(request.headers.get('To') or '')};tag={local_tag}"
        event = request.headers.get("Event") or "ua-profile"
        body = url.encode("utf-8")
        return build_request(
            "NOTIFY",
            remote_uri,
            endpoint=endpoint,
            from_value=from_value,
            to_value=to_value,
            call_id=request.call_id or new_call_id(),
            cseq=1,
            body=body,
            content_type="application/url",
            extra=(
                ("Contact", endpoint.contact),
                ("Event", event),
                ("Subscription-State", "terminated;reason=timeout"),
            ),
        )


def _without_tag(value: str) -> str:
    return re.sub(r";\s*tag=[^;]*", "", value, flags=re.IGNORECASE)


def _is_multicast(host: str) -> bool:
    try:
        return socket.inet_aton(host)[0] & 0xF0 == 0xE0
    except OSError:
        return False


class MulticastListener:
    """Its own UDP socket on the plug-and-play group, joined on the PBX's interface.

    ``deliver(datagram, remote)`` gets every datagram; the PBX parses it like one of its own.
    `start` returns False, after one clear log line, when the group cannot be joined (no
    multicast route, an interface without multicast, the port taken): the PBX runs on without
    discovery.
    """

    def __init__(
        self,
        interface: str,
        deliver: Callable[[bytes, Address], None],
        *,
        group: str = PNP_GROUP,
        port: int = PNP_PORT,
    ) -> None:
        self.interface = interface
        self.group = group
        self.port = port
        self._deliver = deliver
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> bool:
        try:
            sock = self._open()
        except OSError as err:
            _LOGGER.warning(
                "Plug-and-play discovery is off: cannot join %s:%d on %s: %s",
                self.group,
                self.port,
                self.interface,
                err.strerror or err,
            )
            return False
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(self._deliver), sock=sock
        )
        self._transport = transport
        _LOGGER.info(
            "Listening for plug-and-play requests on %s:%d (interface %s)",
            self.group,
            self.port,
            self.interface,
        )
        return True

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # Several listeners (two PBXs, a restart) may share the group's port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.group, self.port))
            join_group(sock, self.group, self.interface)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def running(self) -> bool:
        return self._transport is not None


def join_group(sock: socket.socket, group: str, interface: str) -> None:
    """IP_ADD_MEMBERSHIP on ``interface`` (an address; the wildcard lets the kernel choose)."""
    local = "0.0.0.0" if interface in _UNSPECIFIED else interface
    request = socket.inet_aton(group) + socket.inet_aton(local)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, request)
    # Only this group's datagrams, not every group another socket of the host joined.
    ip_multicast_all = getattr(socket, "IP_MULTICAST_ALL", 49)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_IP, ip_multicast_all, 0)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, deliver: Callable[[bytes, Address], None]) -> None:
        self._deliver = deliver

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            self._deliver(data, Address(str(addr[0]), int(addr[1])))
        except Exception:
            _LOGGER.exception("Plug-and-play datagram from %s could not be handled", addr)

    def error_received(self, exc: Exception) -> None:
        _LOGGER.debug("Plug-and-play socket error: %s", exc)
