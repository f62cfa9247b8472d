"""Desk phones found on the network, offered as discoveries; what registered phones say they are.

The PBX notices phones itself (``sip_core.phones``: plug-and-play SUBSCRIBEs at boot, REGISTERs
for usernames nobody configured). Home Assistant's shared zeroconf instance adds the few phones
that announce themselves over mDNS: it browses the service types of `MDNS_PHONES` (the manifest's
``zeroconf`` list says the same) and starts a zeroconf flow, which records the phone in the same
directory. Home Assistant's manifest discovery alone cannot say "new phone" to an integration
that is already set up once, so `PhoneDiscovery` starts the discovery flows for the PBX's own
finds, and fires ``callflip_phone_discovered`` for automations.

It also keeps the device registry honest about the hardware: after a phone registers, its SIP
device shows the manufacturer, model and firmware from its User-Agent, and its MAC address as a
connection when one is known (from the User-Agent, or plug-and-play at the same address).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from homeassistant.config_entries import SOURCE_INTEGRATION_DISCOVERY, ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import discovery_flow
from homeassistant.helpers.network import NoURLAvailableError, get_url
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo

from sip_core.events import PbxEvent, RegistrationChanged, RegistrationReason
from sip_core.phones import DiscoveredPhone, DiscoverySource, Sighting
from sip_core.useragent import PhoneIdentity, find_mac, format_mac, normalise_mac, parse_user_agent

from .const import DOMAIN, EVENT_PHONE_DISCOVERED
from .hub import CallflipHub, device_identifier, hub_identifier
from .provisioning_view import PROVISION_URL_BASE

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MdnsPhoneType:
    """One kind of phone that announces itself over DNS-SD."""

    service_type: str
    manufacturer: str | None  # None: read from the TXT records
    name_prefixes: tuple[str, ...] = ()  # instance names that are phones (lower case)


MDNS_PHONES: tuple[MdnsPhoneType, ...] = (
    # Cisco Small Business (SPA) phones: model and MAC address in TXT records.
    MdnsPhoneType("_csco-sb._tcp.local.", "Cisco"),
    # Grandstream door stations (GDS) and speakers (GSC): their web UI, named by model and MAC.
    MdnsPhoneType("_https._tcp.local.", "Grandstream", ("gds", "gsc")),
)
"""The service types browsed for phones; add a row here and the same matcher to manifest.json."""

_TXT_MODEL = ("model", "modelnumber", "model_number", "pid", "product")
_TXT_MAC = ("mac", "macaddress", "mac_address", "hwaddr", "serialno")
_TXT_FIRMWARE = ("firmware", "firmwareversion", "fw", "fwver", "version", "swversion")


def phone_from_zeroconf(info: ZeroconfServiceInfo) -> Sighting | None:
    """A sighting for a zeroconf record of a phone; None when the record is not one of ours."""
    kind = next((k for k in MDNS_PHONES if k.service_type == info.type), None)
    if kind is None:
        return None
    instance = info.name.removesuffix("." + info.type).removesuffix(info.type)
    if kind.name_prefixes and not instance.lower().startswith(kind.name_prefixes):
        return None
    txt = {str(key).lower(): str(value) for key, value in info.properties.items()}
    mac = next((normalise_mac(txt[key]) for key in _TXT_MAC if txt.get(key)), None)
    mac = mac or find_mac(instance)
    model = next((txt[key] for key in _TXT_MODEL if txt.get(key)), None)
    if model is None and kind.name_prefixes:
        match = re.match(r"([A-Za-z]+\d+[A-Za-z0-9]*)", instance)
        model = match.group(1).upper() if match else None
    firmware = next((txt[key] for key in _TXT_FIRMWARE if txt.get(key)), None)
    return Sighting(
        DiscoverySource.MDNS,
        str(info.ip_address),
        PhoneIdentity(kind.manufacturer, model, firmware, mac),
        port=info.port,
    )


def flow_data(phone: DiscoveredPhone) -> dict[str, Any]:
    """What a discovery flow needs of a phone (plain JSON: flows are kept as such)."""
    return {
        "key": phone.key,
        "mac": phone.mac,
        "host": phone.host,
        "manufacturer": phone.identity.manufacturer,
        "model": phone.identity.model,
        "firmware": phone.identity.firmware,
        "source": phone.source.value,
        "sources": sorted(source.value for source in phone.sources),
        "username": phone.username,
        "vendor": phone.vendor,
        "name": phone.describe(),
    }


def mac_is_ours(hass: HomeAssistant, hub: CallflipHub, mac: str) -> bool:
    """Whether one of the entry's SIP devices has this MAC address as a connection."""
    connection = (dr.CONNECTION_NETWORK_MAC, format_mac(mac))
    registry = dr.async_get(hass)
    return any(
        connection in device.connections
        for device in dr.async_entries_for_config_entry(registry, hub.entry.entry_id)
    )


@callback
def link_mac(hass: HomeAssistant, hub: CallflipHub, device_id: str, mac: str) -> None:
    """Record a phone's MAC address as a connection of its SIP device (once it exists)."""
    registry = dr.async_get(hass)
    ha_id = hub.ha_device_id(device_identifier(device_id))
    if ha_id is None:
        return
    try:
        registry.async_update_device(
            ha_id, merge_connections={(dr.CONNECTION_NETWORK_MAC, format_mac(mac))}
        )
    except HomeAssistantError as err:  # another device already holds this MAC
        _LOGGER.debug("MAC %s not linked to %s: %s", mac, device_id, err)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class PhoneDiscovery:
    """One entry's discovery: flows and events for new phones, hardware facts for devices."""

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry[Any], hub: CallflipHub) -> None:
        self.hass = hass
        self.entry = entry
        self.hub = hub
        self._unsubscribe: list[Callable[[], None]] = []
        self._hardware: dict[str, PhoneIdentity] = {}  # by device username

    @callback
    def async_start(self) -> None:
        pbx = self.hub.pbx
        pbx.set_provisioning_url(self._provisioning_url())
        self._unsubscribe = [
            pbx.phones.subscribe(self._phone_found),
            pbx.subscribe(self._pbx_event),
            self.hub.async_add_topology_listener(self._apply_hardware),
        ]
        for binding in sorted(pbx.bindings(), key=lambda b: b.registered_at):
            self._note_hardware(binding.username, binding.user_agent, binding.source.remote.host)
        self._apply_hardware()

    @callback
    def async_stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []

    def _provisioning_url(self) -> str | None:
        """Where phones fetch their files: the internal URL when it names an IP address; else,
        over plain HTTP, our address as each phone reaches it (``{host}``, filled in by the PBX),
        since few phones resolve names such as homeassistant.local; else the internal URL."""
        try:
            base: str | None = get_url(self.hass, allow_external=False, allow_cloud=False)
        except NoURLAvailableError:
            base = None
        if base is not None and _is_ip(urlsplit(base).hostname or ""):
            return base.rstrip("/") + PROVISION_URL_BASE
        http = getattr(self.hass, "http", None)
        if http is not None and getattr(http, "ssl_certificate", None) is None:
            port = getattr(http, "server_port", None)
            if isinstance(port, int):
                return f"http://{{host}}:{port}{PROVISION_URL_BASE}"
        if base is not None:
            return base.rstrip("/") + PROVISION_URL_BASE
        _LOGGER.warning(
            "Home Assistant has no internal URL: phones cannot be provisioned, only "
            "configured by hand"
        )
        return None

    # -- new phones --------------------------------------------------------------------------

    @callback
    def _phone_found(self, phone: DiscoveredPhone, new: bool) -> None:
        if not new or self._is_ours(phone):
            return
        data = flow_data(phone)
        self.hass.bus.async_fire(
            EVENT_PHONE_DISCOVERED,
            {**data, "device_id": self.hub.ha_device_id(hub_identifier(self.entry.entry_id))},
        )
        if phone.source is DiscoverySource.MDNS:
            return  # its zeroconf flow is already on screen
        discovery_flow.async_create_flow(
            self.hass, DOMAIN, context={"source": SOURCE_INTEGRATION_DISCOVERY}, data=data
        )

    def _is_ours(self, phone: DiscoveredPhone) -> bool:
        """A phone that is already one of the configured devices (by account or MAC)."""
        if phone.username and phone.username in self.hub.by_username():
            return True
        return phone.mac is not None and mac_is_ours(self.hass, self.hub, phone.mac)

    # -- hardware of registered devices ---------------------------------------------------------

    @callback
    def _pbx_event(self, event: PbxEvent) -> None:
        if not isinstance(event, RegistrationChanged) or event.reason not in (
            RegistrationReason.REGISTERED,
            RegistrationReason.REFRESHED,
        ):
            return
        if not event.changed:
            return
        binding = event.changed[-1]
        if self._note_hardware(event.username, binding.user_agent, binding.source.remote.host):
            self._apply_hardware()

    def _note_hardware(self, username: str, user_agent: str | None, host: str) -> bool:
        """Remember what a device's User-Agent says; True when it changed."""
        identity = parse_user_agent(user_agent)
        if identity.mac is None:
            # Plug-and-play at the same address told us the MAC (and maybe more).
            for phone in self.hub.pbx.phones.all():
                if (
                    phone.host == host
                    and phone.mac
                    and DiscoverySource.REGISTER not in phone.sources
                ):
                    identity = PhoneIdentity(
                        identity.manufacturer or phone.identity.manufacturer,
                        identity.model or phone.identity.model,
                        identity.firmware or phone.identity.firmware,
                        phone.mac,
                    )
        if identity == PhoneIdentity() or self._hardware.get(username) == identity:
            return False
        self._hardware[username] = identity
        return True

    @callback
    def _apply_hardware(self) -> None:
        """Write what the phones said into their registry entries (after every registry sync,
        which writes callflip's own defaults)."""
        registry = dr.async_get(self.hass)
        for username, identity in self._hardware.items():
            owned = self.hub.by_username().get(username)
            if owned is None:
                continue
            device_id = self.hub.ha_device_id(device_identifier(owned.device["id"]))
            device = registry.async_get(device_id) if device_id else None
            if device is None:
                continue
            changes: dict[str, Any] = {}
            if identity.manufacturer and device.manufacturer != identity.manufacturer:
                changes["manufacturer"] = identity.manufacturer
            if identity.model and device.model != identity.model:
                changes["model"] = identity.model
            if identity.firmware and device.sw_version != identity.firmware:
                changes["sw_version"] = identity.firmware
            if changes:
                registry.async_update_device(device.id, **changes)
            if identity.mac:
                connection = (dr.CONNECTION_NETWORK_MAC, format_mac(identity.mac))
                if connection not in device.connections:
                    try:
                        registry.async_update_device(device.id, merge_connections={connection})
                    except HomeAssistantError as err:  # another device holds this MAC
                        _LOGGER.debug("MAC %s not added to %s: %s", identity.mac, username, err)
