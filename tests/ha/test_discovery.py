"""Discovered phones in Home Assistant: flows that add the phone to the existing PBX entry,
ignoring, the discovery event and trigger, provisioning through the view, and what registered
phones show in the device registry.

The PBX here listens on 127.0.0.1, where it does not join the multicast group; a plug-and-play
SUBSCRIBE sent straight to its port takes the same path as one heard on the group (the multicast
itself is tested in tests/sip_core/test_plugplay_netns.py).
"""

from __future__ import annotations

import asyncio
import secrets
import xml.etree.ElementTree as ET
from ipaddress import ip_address
from types import SimpleNamespace
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from homeassistant.components.device_automation import DeviceAutomationType
from homeassistant.config_entries import (
    SOURCE_IGNORE,
    SOURCE_INTEGRATION_DISCOVERY,
    SOURCE_USER,
    SOURCE_ZEROCONF,
)
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.core_config import async_process_ha_core_config
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.http import KEY_HASS
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_get_device_automations,
    async_mock_service,
)

from custom_components.callflip.const import DOMAIN, EVENT_PHONE_DISCOVERED
from custom_components.callflip.discovery import MDNS_PHONES, phone_from_zeroconf
from custom_components.callflip.provisioning_view import ProvisioningView
from custom_components.callflip.users import password_is_strong
from sip_core.message import Request, Response, parse_message
from sip_core.useragent import PhoneIdentity, format_mac

from .callflip_testing import DOMAIN_NAME, find_device
from .sip_client import SipPhone

SNOM_MAC = "000413a1b2c3"
CISCO_MAC = "001d45aabbcc"


def _cisco_record() -> ZeroconfServiceInfo:
    return ZeroconfServiceInfo(
        ip_address=ip_address("192.168.1.40"),
        ip_addresses=[ip_address("192.168.1.40")],
        hostname="SPA504G-aabbcc.local.",
        name="SPA504G-aabbcc._csco-sb._tcp.local.",
        port=443,
        type="_csco-sb._tcp.local.",
        properties={"model": "SPA504G", "mac": "00:1d:45:aa:bb:cc", "firmwareVersion": "7.6.2"},
    )


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[Request | Response] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(parse_message(data))


class PlugAndPlayPhone:
    """A Snom D785 on 127.0.0.1 that asks the PBX for its profile, as at boot."""

    def __init__(self, pbx_port: int) -> None:
        self.pbx_port = pbx_port
        self.transport: asyncio.DatagramTransport | None = None
        self.protocol = _Socket()

    async def __aenter__(self) -> PlugAndPlayPhone:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self.protocol, local_addr=("127.0.0.1", 0)
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.transport is not None
        self.transport.close()

    def subscribe(self) -> None:
        assert self.transport is not None
        port = self.transport.get_extra_info("sockname")[1]
        tag = secrets.token_hex(4)
        text = (
            f"SUBSCRIBE sip:MAC%3a{SNOM_MAC}@224.0.1.75 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{tag};rport\r\n"
            f"From: <sip:MAC%3a{SNOM_MAC}@224.0.1.75>;tag={tag}\r\n"
            f"To: <sip:MAC%3a{SNOM_MAC}@224.0.1.75>\r\n"
            f"Call-ID: {tag}@127.0.0.1\r\nCSeq: 1 SUBSCRIBE\r\n"
            f"Contact: <sip:127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n"
            "User-Agent: snomD785/10.1.73.16\r\n"
            'Event: ua-profile;profile-type="device";vendor="snom";model="snomD785";'
            'version="10.1.73.16"\r\n'
            "Accept: application/url\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n"
        )
        self.transport.sendto(text.encode(), ("127.0.0.1", self.pbx_port))

    async def receive(self) -> Request | Response:
        return await asyncio.wait_for(self.protocol.received.get(), 5.0)


def _flows(hass: HomeAssistant, source: str) -> list[dict[str, Any]]:
    return [
        flow
        for flow in hass.config_entries.flow.async_progress_by_handler(DOMAIN)
        if flow["context"]["source"] == source
    ]


async def _until_flow(hass: HomeAssistant, source: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while not _flows(hass, source):
            await hass.async_block_till_done()
            await asyncio.sleep(0.01)
    return _flows(hass, source)[0]


def test_the_manifest_browses_what_the_code_knows() -> None:
    import json
    from pathlib import Path

    manifest = json.loads(
        (Path(__file__).parents[2] / "custom_components/callflip/manifest.json").read_text()
    )
    assert "single_config_entry" not in manifest
    listed = {(entry["type"], entry.get("name")) for entry in manifest["zeroconf"]}
    known = {
        (kind.service_type, f"{prefix}*" if prefix else None)
        for kind in MDNS_PHONES
        for prefix in (kind.name_prefixes or (None,))
    }
    assert listed == known


async def test_a_cisco_phone_on_mdns_is_added_to_the_existing_entry(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=_cisco_record()
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "discovery_confirm"
    assert result["description_placeholders"]["name"] == "Cisco SPA504G at 192.168.1.40"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"owner": "u-bob", "label": "Bob's SPA", "type": "desk"}
    )
    # Cisco files are not written: the manual settings, with the generated account.
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "manual_settings"
    settings = result["description_placeholders"]
    assert settings["username"] == "spa504g-aabbcc"
    assert settings["domain"] == DOMAIN_NAME
    assert settings["server"] == f"127.0.0.1:{loaded_entry.data['port']}"
    assert password_is_strong(settings["password"], (settings["username"],))
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "phone_added"
    await hass.async_block_till_done()

    assert len(hass.config_entries.async_entries(DOMAIN)) == 1  # no second entry
    bob = next(user for user in loaded_entry.options["users"] if user["id"] == "u-bob")
    added = next(d for d in bob["devices"] if d["username"] == "spa504g-aabbcc")
    assert (added["label"], added["type"], added["password"]) == (
        "Bob's SPA",
        "desk",
        settings["password"],
    )
    pbx = loaded_entry.runtime_data.hub.pbx
    assert pbx.config.device("spa504g-aabbcc") is not None  # the running PBX knows it now
    found = pbx.phones.get(CISCO_MAC)
    assert found is not None
    assert found.identity.firmware == "7.6.2"

    desk = find_device(hass, loaded_entry.entry_id, f"device-{added['id']}")
    assert desk is not None
    assert (dr.CONNECTION_NETWORK_MAC, "00:1d:45:aa:bb:cc") in desk.connections

    # Announced again: the phone is one of ours now, it is not offered twice.
    again = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=_cisco_record()
    )
    assert again["type"] is FlowResultType.ABORT
    assert again["reason"] == "phone_configured"


async def test_mdns_records_that_are_not_phones_are_refused(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    record = ZeroconfServiceInfo(
        ip_address=ip_address("192.168.1.41"),
        ip_addresses=[ip_address("192.168.1.41")],
        hostname="nas.local.",
        name="nas._https._tcp.local.",
        port=443,
        type="_https._tcp.local.",
        properties={},
    )
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=record
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "not_a_phone"


async def test_without_a_pbx_a_phone_cannot_be_added(hass: HomeAssistant) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=_cisco_record()
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "pbx_not_set_up"


async def test_a_plug_and_play_phone_is_discovered_adopted_and_provisioned(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    await async_process_ha_core_config(hass, {"internal_url": "http://192.168.1.2:8123"})
    # The entry was loaded before the internal URL was known: reload to pick it up.
    assert await hass.config_entries.async_reload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    events = async_capture_events(hass, EVENT_PHONE_DISCOVERED)
    pbx = loaded_entry.runtime_data.hub.pbx
    port = loaded_entry.data["port"]
    async with PlugAndPlayPhone(port) as phone:
        phone.subscribe()
        flow = await _until_flow(hass, SOURCE_INTEGRATION_DISCOVERY)
        assert flow["step_id"] == "discovery_confirm"
        assert flow["context"]["title_placeholders"] == {"name": "Snom D785 at 127.0.0.1"}
        assert flow["context"]["unique_id"] == f"phone-{SNOM_MAC}"
        assert len(events) == 1
        hub_device = find_device(hass, loaded_entry.entry_id, loaded_entry.entry_id)
        assert hub_device is not None
        assert events[0].data["mac"] == SNOM_MAC
        assert events[0].data["device_id"] == hub_device.id
        assert (events[0].data["manufacturer"], events[0].data["model"]) == ("Snom", "D785")

        result = await hass.config_entries.flow.async_configure(
            flow["flow_id"], {"owner": "u-alice", "label": "Alice Snom", "type": "desk"}
        )
        assert result["type"] is FlowResultType.FORM
        assert result["step_id"] == "provision"  # reboot the phone; manual settings below
        settings = result["description_placeholders"]
        username, password = settings["username"], settings["password"]
        result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "phone_added"
        await hass.async_block_till_done()

        # The phone reboots and asks again: 200, then a NOTIFY with the view's URL.
        phone.subscribe()
        ok = await phone.receive()
        assert isinstance(ok, Response)
        assert ok.status == 200
        notify = await phone.receive()
        assert isinstance(notify, Request)
        assert notify.method == "NOTIFY"
    url = notify.body.decode()
    prefix = "http://192.168.1.2:8123/api/callflip/provision/"
    assert url.startswith(prefix)
    assert password not in url
    token, name = url.removeprefix(prefix).split("/")
    assert name == f"{SNOM_MAC}.xml"

    view = ProvisioningView()
    app = web.Application()
    app[KEY_HASS] = hass

    async def fetch(remote: str) -> web.Response:
        request = make_mocked_request("GET", url.removeprefix("http://192.168.1.2:8123"), app=app)
        request = request.clone(remote=remote)
        return await view.get(request, token, name)

    assert (await fetch("192.168.1.77")).status == 404  # not the phone's address
    served = await fetch("127.0.0.1")
    assert served.status == 200
    assert served.body is not None
    settings_xml = ET.fromstring(bytes(served.body)).find("phone-settings")
    assert settings_xml is not None
    assert settings_xml.findtext("user_name") == username
    assert settings_xml.findtext("user_pass") == password
    assert (await fetch("127.0.0.1")).status == 404  # once only
    assert pbx.phones.get(SNOM_MAC) is not None


async def test_ignoring_a_discovered_phone_works_as_everywhere(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=_cisco_record()
    )
    assert result["type"] is FlowResultType.FORM
    ignored = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_IGNORE},
        data={"unique_id": f"phone-{CISCO_MAC}", "title": "Cisco SPA504G"},
    )
    assert ignored["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    again = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=_cisco_record()
    )
    assert again["type"] is FlowResultType.ABORT
    assert again["reason"] == "already_configured"
    # The PBX runs on, and the ignored phone does not count as a second PBX.
    assert loaded_entry.runtime_data.hub.pbx.running
    user = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert user["type"] is FlowResultType.ABORT
    assert user["reason"] == "single_instance_allowed"


async def test_the_user_step_allows_one_pbx_only_and_ignored_phones_do_not_count(
    hass: HomeAssistant,
) -> None:
    MockConfigEntry(
        domain=DOMAIN, source=SOURCE_IGNORE, unique_id=f"phone-{CISCO_MAC}"
    ).add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"


async def test_an_unknown_account_registering_becomes_a_discovery_with_its_username(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    events = async_capture_events(hass, EVENT_PHONE_DISCOVERED)
    phone = SipPhone(
        port=loaded_entry.data["port"],
        username="kitchen",
        password="not-known-here-1234",
        domain=DOMAIN_NAME,
        user_agent="Grandstream GXP2170 1.0.11.6",
    )
    await phone.open()
    try:
        assert (await phone.register()).status == 401
    finally:
        phone.close()
    flow = await _until_flow(hass, SOURCE_INTEGRATION_DISCOVERY)
    assert flow["context"]["title_placeholders"] == {"name": "Grandstream GXP2170 at 127.0.0.1"}
    assert events[0].data["username"] == "kitchen"
    result = await hass.config_entries.flow.async_configure(
        flow["flow_id"], {"owner": "u-alice", "label": "Kitchen phone", "type": "home"}
    )
    assert result["step_id"] == "manual_settings"  # found by REGISTER: set up by hand
    assert result["description_placeholders"]["username"] == "kitchen"


async def test_the_pbx_device_offers_the_discovery_trigger(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    hub_device = find_device(hass, loaded_entry.entry_id, loaded_entry.entry_id)
    assert hub_device is not None
    triggers = await async_get_device_automations(hass, DeviceAutomationType.TRIGGER, hub_device.id)
    assert {t["type"] for t in triggers if t["domain"] == DOMAIN} == {"phone_discovered"}
    calls: list[ServiceCall] = async_mock_service(hass, "test", "automation")
    assert await async_setup_component(
        hass,
        "automation",
        {
            "automation": {
                "trigger": {
                    "platform": "device",
                    "domain": DOMAIN,
                    "device_id": hub_device.id,
                    "type": "phone_discovered",
                },
                "action": {
                    "service": "test.automation",
                    "data": {"mac": "{{ trigger.event.data.mac }}"},
                },
            }
        },
    )
    await hass.async_block_till_done()
    await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=_cisco_record()
    )
    await hass.async_block_till_done()
    assert [call.data["mac"] for call in calls] == [CISCO_MAC]


async def test_a_registered_phone_shows_its_hardware_in_the_device_registry(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    phone = SipPhone(
        port=loaded_entry.data["port"],
        username="alice-desk",
        password="Desk-Phone-Secret-1",
        domain=DOMAIN_NAME,
        user_agent="Yealink SIP-T46S 66.86.0.15 00:15:65:12:34:56",
    )
    await phone.open()
    try:
        assert (await phone.register()).status == 200
    finally:
        phone.close()
    await hass.async_block_till_done()
    device = find_device(hass, loaded_entry.entry_id, "device-d-alice-desk")
    assert device is not None
    assert (device.manufacturer, device.model, device.sw_version) == (
        "Yealink",
        "SIP-T46S",
        "66.86.0.15",
    )
    assert (dr.CONNECTION_NETWORK_MAC, format_mac("001565123456")) in device.connections
    # Editing the household rewrites the registry: the hardware stays.
    options = dict(loaded_entry.options)
    hass.config_entries.async_update_entry(loaded_entry, options={**options})
    loaded_entry.runtime_data.hub.async_apply_options(options, list(options["users"]))
    await hass.async_block_till_done()
    device = find_device(hass, loaded_entry.entry_id, "device-d-alice-desk")
    assert device is not None
    assert (device.manufacturer, device.model) == ("Yealink", "SIP-T46S")


def test_grandstream_door_stations_are_read_from_their_instance_name() -> None:
    record = ZeroconfServiceInfo(
        ip_address=ip_address("192.168.1.50"),
        ip_addresses=[ip_address("192.168.1.50")],
        hostname="gds3710.local.",
        name="GDS3710_000B82AABBCC._https._tcp.local.",
        port=443,
        type="_https._tcp.local.",
        properties={},
    )
    sighting = phone_from_zeroconf(record)
    assert sighting is not None
    assert sighting.identity == PhoneIdentity("Grandstream", "GDS3710", None, "000b82aabbcc")
    assert sighting.host == "192.168.1.50"
    other = ZeroconfServiceInfo(
        ip_address=ip_address("192.168.1.51"),
        ip_addresses=[ip_address("192.168.1.51")],
        hostname="printer.local.",
        name="printer._ipp._tcp.local.",
        port=631,
        type="_ipp._tcp.local.",
        properties={},
    )
    assert phone_from_zeroconf(other) is None


async def _notify_url(hass: HomeAssistant, entry: MockConfigEntry) -> str:
    """Reload the entry, let the Snom ask, adopt it, let it ask again: the NOTIFY's URL."""
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    pbx = entry.runtime_data.hub.pbx
    async with PlugAndPlayPhone(entry.data["port"]) as phone:
        found = asyncio.Event()
        unsubscribe = pbx.phones.subscribe(lambda phone, _new: found.set())
        phone.subscribe()
        await asyncio.wait_for(found.wait(), 5)
        unsubscribe()
        pbx.adopt(SNOM_MAC, "alice-desk")
        phone.subscribe()
        assert isinstance(await phone.receive(), Response)
        notify = await phone.receive()
    assert isinstance(notify, Request)
    return notify.body.decode()


async def test_phones_get_an_address_they_can_reach_rather_than_a_local_name(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """Few phones resolve names such as homeassistant.local: over plain HTTP they are given
    the address they reached the PBX on, with Home Assistant's port."""
    await async_process_ha_core_config(hass, {"internal_url": "http://homeassistant.local:8123"})
    url = await _notify_url(hass, loaded_entry)
    assert url.startswith("http://homeassistant.local:8123/api/callflip/provision/")
    saved = hass.http
    hass.http = SimpleNamespace(ssl_certificate=None, server_port=8124)  # type: ignore[assignment]
    try:
        url = await _notify_url(hass, loaded_entry)
    finally:
        hass.http = saved
    assert url.startswith("http://127.0.0.1:8124/api/callflip/provision/")


async def test_a_tried_username_that_is_taken_is_replaced_by_a_free_one(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """A phone trying extension 101 (Alice's) as its account gets a generated one instead."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_INTEGRATION_DISCOVERY},
        data={
            "key": "101@192.168.1.60",
            "mac": None,
            "host": "192.168.1.60",
            "manufacturer": "Gigaset",
            "model": "N510 IP PRO",
            "firmware": "42.250",
            "source": "register",
            "sources": ["register"],
            "username": "101",
            "vendor": None,
            "name": "Gigaset N510 IP PRO at 192.168.1.60",
        },
    )
    assert result["step_id"] == "discovery_confirm"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"owner": "u-alice", "label": "Gigaset", "type": "home"}
    )
    assert result["step_id"] == "manual_settings"
    assert result["description_placeholders"]["username"] == "n510-ip-pro-60"
