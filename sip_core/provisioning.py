"""Adopting a phone: a one-time token, and the configuration file the phone fetches with it.

When the user adopts a phone found by plug-and-play, `Provisioner.arm` creates an `Adoption`: a
random token bound to the phone's MAC address and IP address, valid for `ADOPTION_LIFETIME`
seconds. The next plug-and-play SUBSCRIBE from that phone is answered with a NOTIFY carrying a URL
that contains the token (`sip_core.plugplay`); the phone then fetches its configuration file over
HTTP, and `Provisioner.fetch` hands it out exactly once. The first fetch or the first successful
REGISTER of the account spends the token; a spent or expired token, another MAC address or another
IP address gets nothing (the HTTP side answers 404). The password only ever travels inside the
file's body: it is never part of a URL, and nothing here logs the token or the file.

The file formats, one per vendor (facts taken from each vendor's provisioning documentation):

- Snom (``ConfigFormat.SNOM``): the "Desk Phone Configuration Files" pages of Snom's service wiki.
  A UTF-8 XML document ``<settings>`` with a ``<phone-settings>`` element whose children are the
  settings by name; per-identity settings carry ``idx`` (the account number, from 1) and ``perm``
  (R: the user may not change it). Account 1 needs ``user_active``, ``user_name``, ``user_pass``,
  ``user_host`` (registrar, ``host:port``) and ``user_realname``. Snom fetches exactly the URL it
  is given, so the NOTIFY names the file itself.
- Yealink (``ConfigFormat.YEALINK``): Yealink's "Auto Provisioning Guide" (common and
  MAC-oriented CFG files). A text file whose first line must be ``#!version:1.0.0.1``, then
  ``key = value`` lines; account 1 is ``account.1.enable``, ``.label``, ``.display_name``,
  ``.auth_name``, ``.user_name``, ``.password``, ``.sip_server.1.address`` and
  ``.sip_server.1.port``. Given a server URL, the phone fetches a common file
  (``y0000000000xx.cfg``) and then ``<mac>.cfg`` with the MAC in lower case; the NOTIFY names
  the directory, the common file is simply not there.
- Grandstream (``ConfigFormat.GRANDSTREAM``): Grandstream's "XML Provisioning Guide" and "SIP
  Device Provisioning Guide". ``<gs_provision version="1">`` with an optional ``<mac>`` (the
  phone checks it against its own) and ``<config version="1">`` holding P-values: P271 account
  active, P270 account name, P47 SIP server, P35 SIP user ID, P36 authentication ID, P34
  password, P3 display name. The phone fetches ``cfg<mac>`` (a binary legacy format, not served)
  and then ``cfg<mac>.xml`` from the configured directory, which the NOTIFY names.

A phone of another vendor can still be discovered and added; it is configured by hand.
"""

from __future__ import annotations

import logging
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from .clock import Clock
from .useragent import vendor_name

__all__ = [
    "ADOPTION_LIFETIME",
    "Adoption",
    "AdoptionState",
    "ConfigFormat",
    "Provisioner",
    "ProvisioningAccount",
    "ProvisioningFile",
    "format_for",
    "render",
]

_LOGGER = logging.getLogger(__name__)

ADOPTION_LIFETIME: Final = 600.0
"""Seconds an adoption stays valid: time to reboot a phone and let it ask, not more."""

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


class ConfigFormat(StrEnum):
    """The configuration file formats callflip can write (see the module docstring)."""

    SNOM = "snom"
    YEALINK = "yealink"
    GRANDSTREAM = "grandstream"


_FORMATS: Final[dict[str, ConfigFormat]] = {
    "Snom": ConfigFormat.SNOM,
    "Yealink": ConfigFormat.YEALINK,
    "Grandstream": ConfigFormat.GRANDSTREAM,
}


def format_for(manufacturer: str | None) -> ConfigFormat | None:
    """The file format for a manufacturer (or plug-and-play vendor string); None if unsupported."""
    name = vendor_name(manufacturer) if manufacturer else None
    return _FORMATS.get(name) if name else None


@dataclass(frozen=True, slots=True)
class ProvisioningAccount:
    """What goes into the file: where to register and with which credentials."""

    server_host: str
    server_port: int
    username: str
    password: str
    display_name: str

    @property
    def server(self) -> str:
        host = f"[{self.server_host}]" if ":" in self.server_host else self.server_host
        return f"{host}:{self.server_port}"


@dataclass(frozen=True, slots=True)
class ProvisioningFile:
    content_type: str
    body: bytes


class AdoptionState(StrEnum):
    ARMED = "armed"  # waiting for the phone's plug-and-play SUBSCRIBE
    NOTIFIED = "notified"  # the phone was told the URL; waiting for its fetch
    SPENT = "spent"  # fetched, or the account registered: the token is worthless now


@dataclass(slots=True)
class Adoption:
    """One armed adoption. ``token`` is secret: never log it."""

    token: str
    mac: str
    host: str
    username: str
    config_format: ConfigFormat
    server_host: str
    server_port: int
    expires_at: float  # monotonic
    state: AdoptionState = AdoptionState.ARMED

    def __repr__(self) -> str:  # keeps the token out of tracebacks and debug logs
        return (
            f"Adoption(mac={self.mac!r}, host={self.host!r}, username={self.username!r}, "
            f"format={self.config_format.value}, state={self.state.value})"
        )

    @property
    def file_name(self) -> str:
        """The name the phone asks for (see the module docstring)."""
        return file_name(self.config_format, self.mac)

    def url_path(self) -> str:
        """The path after the base URL that goes into the NOTIFY: the file itself for phones
        that fetch exactly what they are given, the token's directory for the others."""
        if self.config_format is ConfigFormat.SNOM:
            return f"{self.token}/{self.file_name}"
        return f"{self.token}/"


def file_name(config_format: ConfigFormat, mac: str) -> str:
    if config_format is ConfigFormat.SNOM:
        return f"{mac}.xml"
    if config_format is ConfigFormat.YEALINK:
        return f"{mac}.cfg"
    return f"cfg{mac}.xml"


AccountLookup = Callable[[str], tuple[str, str] | None]
"""A device username to its (password, display name), or None when it is not configured."""


class Provisioner:
    """Armed adoptions, by token; hands each configuration file out once."""

    def __init__(
        self, clock: Clock, accounts: AccountLookup, *, lifetime: float = ADOPTION_LIFETIME
    ) -> None:
        self._clock = clock
        self._accounts = accounts
        self._lifetime = lifetime
        self._by_token: dict[str, Adoption] = {}

    def arm(
        self,
        *,
        mac: str,
        host: str,
        username: str,
        config_format: ConfigFormat,
        server_host: str,
        server_port: int,
    ) -> Adoption:
        """Arm a one-time adoption of the phone with this MAC at this address (replacing any
        earlier one for the same MAC)."""
        self._prune()
        self.disarm(mac)
        adoption = Adoption(
            token=secrets.token_urlsafe(24),
            mac=mac,
            host=host,
            username=username,
            config_format=config_format,
            server_host=server_host,
            server_port=server_port,
            expires_at=self._clock.monotonic() + self._lifetime,
        )
        self._by_token[adoption.token] = adoption
        _LOGGER.info(
            "Adoption of %s at %s as %s armed for %d s: reboot the phone",
            mac,
            host,
            username,
            self._lifetime,
        )
        return adoption

    @property
    def active(self) -> bool:
        """Whether any adoption is armed (a cheap check for the REGISTER path)."""
        return bool(self._by_token)

    def disarm(self, mac: str) -> None:
        """Forget every adoption of this MAC."""
        for token in [t for t, a in self._by_token.items() if a.mac == mac]:
            del self._by_token[token]

    def pending(self, mac: str, host: str) -> Adoption | None:
        """The live, unspent adoption for a phone at this address, if there is one."""
        self._prune()
        for adoption in self._by_token.values():
            if (
                adoption.mac == mac
                and adoption.host == host
                and adoption.state is not AdoptionState.SPENT
            ):
                return adoption
        return None

    def adoptions(self) -> list[Adoption]:
        """Live adoptions (for diagnostics: the token must not be shown)."""
        self._prune()
        return list(self._by_token.values())

    def notified(self, adoption: Adoption) -> None:
        if adoption.state is AdoptionState.ARMED:
            adoption.state = AdoptionState.NOTIFIED

    def fetch(self, token: str, name: str, host: str) -> ProvisioningFile | None:
        """The file for a fetch of ``name`` under ``token`` from ``host``; None means 404.

        Only the adopted phone's own file is served, once: to its address, under its MAC's name.
        A request for any other file (a vendor's common file, another MAC's) is refused without
        spending the token, so a phone that asks for a common file first still gets its own.
        """
        self._prune()
        adoption = self._by_token.get(token)
        if adoption is None:
            _LOGGER.info("Provisioning fetch of %s from %s: no such adoption", _safe(name), host)
            return None
        if adoption.state is AdoptionState.SPENT:
            _LOGGER.warning(
                "Provisioning fetch for %s from %s refused: already used", adoption.mac, host
            )
            return None
        if host != adoption.host:
            _LOGGER.warning(
                "Provisioning fetch for %s refused: it came from %s, the phone is at %s",
                adoption.mac,
                host,
                adoption.host,
            )
            return None
        if name.lower() != adoption.file_name:
            _LOGGER.info(
                "Provisioning fetch of %s from %s: not the file of %s",
                _safe(name),
                host,
                adoption.mac,
            )
            return None
        found = self._accounts(adoption.username)
        if found is None:
            _LOGGER.warning(
                "Provisioning fetch for %s refused: device %s is no longer configured",
                adoption.mac,
                adoption.username,
            )
            return None
        password, display_name = found
        account = ProvisioningAccount(
            adoption.server_host,
            adoption.server_port,
            adoption.username,
            password,
            display_name,
        )
        try:
            body = render(adoption.config_format, account, adoption.mac)
        except ValueError as err:
            _LOGGER.warning("Cannot write the configuration of %s: %s", adoption.mac, err)
            return None
        adoption.state = AdoptionState.SPENT
        _LOGGER.info(
            "Served the configuration of %s (%s) to %s", adoption.mac, account.username, host
        )
        return body

    def registered(self, username: str) -> None:
        """The account registered successfully: its adoption has done its job."""
        for adoption in self._by_token.values():
            if adoption.username == username and adoption.state is not AdoptionState.SPENT:
                adoption.state = AdoptionState.SPENT
                _LOGGER.info("Adoption of %s complete: %s registered", adoption.mac, username)

    def _prune(self) -> None:
        now = self._clock.monotonic()
        for token in [t for t, a in self._by_token.items() if a.expires_at <= now]:
            adoption = self._by_token.pop(token)
            if adoption.state is not AdoptionState.SPENT:
                _LOGGER.info("Adoption of %s expired unused", adoption.mac)


def _safe(name: str) -> str:
    """A requested file name fit for a log line (bounded, no control characters)."""
    return _CONTROL.sub("?", name[:80])


def render(config_format: ConfigFormat, account: ProvisioningAccount, mac: str) -> ProvisioningFile:
    """The configuration file of ``account`` for a phone of this format (module docstring)."""
    for value in (account.username, account.password, account.display_name, account.server):
        if _CONTROL.search(value):
            raise ValueError("a setting contains a control character")
    if config_format is ConfigFormat.SNOM:
        return _snom(account)
    if config_format is ConfigFormat.YEALINK:
        return _yealink(account)
    return _grandstream(account, mac)


def _xml(root: ET.Element) -> bytes:
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def _snom(account: ProvisioningAccount) -> ProvisioningFile:
    settings = ET.Element("settings")
    phone = ET.SubElement(settings, "phone-settings")
    for name, value in (
        ("user_active", "on"),
        ("user_realname", account.display_name),
        ("user_name", account.username),
        ("user_pass", account.password),
        ("user_host", account.server),
    ):
        element = ET.SubElement(phone, name, idx="1", perm="R")
        element.text = value
    return ProvisioningFile("application/xml", _xml(settings))


def _yealink(account: ProvisioningAccount) -> ProvisioningFile:
    lines = [
        "#!version:1.0.0.1",
        "account.1.enable = 1",
        f"account.1.label = {account.display_name}",
        f"account.1.display_name = {account.display_name}",
        f"account.1.auth_name = {account.username}",
        f"account.1.user_name = {account.username}",
        f"account.1.password = {account.password}",
        f"account.1.sip_server.1.address = {account.server_host}",
        f"account.1.sip_server.1.port = {account.server_port}",
    ]
    return ProvisioningFile("text/plain", ("\n".join(lines) + "\n").encode("utf-8"))


def _grandstream(account: ProvisioningAccount, mac: str) -> ProvisioningFile:
    root = ET.Element("gs_provision", version="1")
    ET.SubElement(root, "mac").text = mac
    config = ET.SubElement(root, "config", version="1")
    for name, value in (
        ("P271", "1"),
        ("P270", account.display_name),
        ("P47", account.server),
        ("P35", account.username),
        ("P36", account.username),
        ("P34", account.password),
        ("P3", account.display_name),
    ):
        ET.SubElement(config, name).text = value
    return ProvisioningFile("application/xml", _xml(root))
