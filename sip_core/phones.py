"""The phones the PBX has noticed on the network but does not serve yet.

Three ways lead here: a plug-and-play SUBSCRIBE (`sip_core.plugplay`), an mDNS announcement that
Home Assistant saw, and a REGISTER for a username nobody configured, sent from a local address.
Each is a `Sighting`; `PhoneDirectory.observe` merges sightings of the same phone (by MAC address
when one is known, else by the username and address that tried to register) into one
`DiscoveredPhone` with first and last seen times, and tells its subscribers about phones seen
for the first time (and about ones whose details changed).

It only records: answering a phone is plug-and-play's decision, adopting one is the user's.
The directory is bounded, forgetting the phone not seen for the longest, so a noisy network
cannot grow it without limit.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from .clock import Clock
from .useragent import PhoneIdentity

__all__ = [
    "DiscoveredPhone",
    "DiscoverySource",
    "PhoneDirectory",
    "Sighting",
    "is_local_address",
]

_LOGGER = logging.getLogger(__name__)

MAX_PHONES = 256
"""Phones remembered at most; the one seen longest ago is forgotten first."""


class DiscoverySource(StrEnum):
    """How a phone was found."""

    PLUG_AND_PLAY = "plug_and_play"  # a ua-profile SUBSCRIBE (RFC 6080) at boot
    MDNS = "mdns"  # a DNS-SD announcement (Home Assistant's zeroconf)
    REGISTER = "register"  # a REGISTER for a username we do not know


@dataclass(frozen=True, slots=True)
class Sighting:
    """One observation of a phone, before it is merged into the directory."""

    source: DiscoverySource
    host: str
    identity: PhoneIdentity
    port: int | None = None
    username: str | None = None  # the account a REGISTER tried
    user_agent: str | None = None
    vendor: str | None = None  # the plug-and-play ``vendor`` parameter, as sent


@dataclass(frozen=True, slots=True)
class DiscoveredPhone:
    """A phone as the directory knows it (a snapshot: the directory replaces, never mutates)."""

    key: str
    source: DiscoverySource  # how it was found first
    host: str
    identity: PhoneIdentity
    first_seen: float  # wall clock
    last_seen: float  # wall clock
    port: int | None = None
    username: str | None = None
    user_agent: str | None = None
    vendor: str | None = None
    sources: frozenset[DiscoverySource] = frozenset()

    @property
    def mac(self) -> str | None:
        return self.identity.mac

    def describe(self) -> str:
        """ "Snom D785 at 192.168.1.23" (for flow titles and logs)."""
        return f"{self.identity.describe()} at {self.host}"


PhoneListener = Callable[[DiscoveredPhone, bool], None]
"""Called with the phone and whether it is new (False: details of a known phone changed)."""


def phone_key(sighting: Sighting) -> str:
    """The MAC address when known; else the username and address of a REGISTER; else the
    address (an mDNS record without a MAC)."""
    if sighting.identity.mac:
        return sighting.identity.mac
    if sighting.username:
        return f"{sighting.username}@{sighting.host}"
    return f"host-{sighting.host}"


def is_local_address(host: str) -> bool:
    """Whether a phone at ``host`` is on a local network (RFC 1918, link-local, ULA, loopback)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_private or address.is_link_local or address.is_loopback


class PhoneDirectory:
    """Every phone noticed recently, by key; subscribers hear of new and changed ones."""

    def __init__(self, clock: Clock, *, limit: int = MAX_PHONES) -> None:
        self._clock = clock
        self._limit = limit
        self._phones: dict[str, DiscoveredPhone] = {}
        self._listeners: list[PhoneListener] = []

    def observe(self, sighting: Sighting) -> DiscoveredPhone:
        """Record a sighting; returns the merged phone."""
        now = self._clock.wall()
        key = phone_key(sighting)
        old = self._phones.pop(key, None)
        if old is None and sighting.identity.mac and sighting.username is None:
            # The same phone may have been noted by address alone (an mDNS record) before.
            old = self._phones.pop(f"host-{sighting.host}", None)
        if old is None:
            phone = DiscoveredPhone(
                key=key,
                source=sighting.source,
                host=sighting.host,
                identity=sighting.identity,
                first_seen=now,
                last_seen=now,
                port=sighting.port,
                username=sighting.username,
                user_agent=sighting.user_agent,
                vendor=sighting.vendor,
                sources=frozenset({sighting.source}),
            )
        else:
            phone = replace(
                old,
                key=key,
                host=sighting.host,
                identity=_merge(old.identity, sighting.identity),
                last_seen=now,
                port=sighting.port if sighting.port is not None else old.port,
                username=sighting.username or old.username,
                user_agent=sighting.user_agent or old.user_agent,
                vendor=sighting.vendor or old.vendor,
                sources=old.sources | {sighting.source},
            )
        self._phones[key] = phone  # last in the dict: the most recently seen
        while len(self._phones) > self._limit:
            forgotten = next(iter(self._phones))
            del self._phones[forgotten]
        if old is None:
            _LOGGER.info(
                "Discovered %s (%s, MAC %s)",
                phone.describe(),
                sighting.source.value,
                phone.mac or "unknown",
            )
        changed = old is None or _details(old) != _details(phone)
        if changed:
            for listener in list(self._listeners):
                try:
                    listener(phone, old is None)
                except Exception:
                    _LOGGER.exception("Phone discovery listener %r failed", listener)
        return phone

    def get(self, key: str) -> DiscoveredPhone | None:
        """A phone by key (its MAC, 12 lower-case hex digits, when it has one)."""
        return self._phones.get(key)

    def all(self) -> list[DiscoveredPhone]:
        """Every phone remembered, the one seen longest ago first."""
        return list(self._phones.values())

    def subscribe(self, listener: PhoneListener) -> Callable[[], None]:
        """Hear of new phones and changed details; the returned function unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe


def _merge(old: PhoneIdentity, new: PhoneIdentity) -> PhoneIdentity:
    return PhoneIdentity(
        manufacturer=new.manufacturer or old.manufacturer,
        model=new.model or old.model,
        firmware=new.firmware or old.firmware,
        mac=new.mac or old.mac,
    )


def _details(phone: DiscoveredPhone) -> tuple[object, ...]:
    return (phone.host, phone.identity, phone.username, phone.sources)
