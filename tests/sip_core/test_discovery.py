"""Phone discovery without multicast: User-Agent parsing, the ua-profile reader, adoptions and
their files, the runner's HTTP answers, the discovery settings, and the PBX's REGISTER hooks
(over real UDP on 127.0.0.1). The multicast path itself is in test_plugplay_netns.py."""

from __future__ import annotations

import asyncio
import secrets
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import pytest

from sip_core.clock import ManualClock
from sip_core.config import ConfigError, config_from_mapping, parse_config
from sip_core.message import Request, parse_message
from sip_core.pbx import Pbx
from sip_core.phones import DiscoverySource, PhoneDirectory, Sighting
from sip_core.plugplay import is_ua_profile, parse_event, parse_ua_profile
from sip_core.provision_http import ProvisioningServer
from sip_core.provisioning import (
    AdoptionState,
    ConfigFormat,
    Provisioner,
    ProvisioningAccount,
    format_for,
    render,
)
from sip_core.useragent import PhoneIdentity, format_mac, normalise_mac, parse_user_agent
from tests.ha.sip_client import SipPhone
from tests.sip_core.test_pbx import free_udp_port


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        ("Yealink SIP-T46S 66.86.0.15", ("Yealink", "SIP-T46S", "66.86.0.15", None)),
        (
            "Yealink SIP-T46G 28.81.0.110 00:15:65:12:34:56",
            ("Yealink", "SIP-T46G", "28.81.0.110", "001565123456"),
        ),
        ("snomD785/10.1.73.16", ("Snom", "D785", "10.1.73.16", None)),
        ("snom370-SIP 8.7.5.35", ("Snom", "370", "8.7.5.35", None)),
        ("Grandstream GXP2170 1.0.11.6", ("Grandstream", "GXP2170", "1.0.11.6", None)),
        ("Gigaset N510 IP PRO/42.250.00", ("Gigaset", "N510 IP PRO", "42.250.00", None)),
        ("Fanvil X4 2.12.1 0c383e123456", ("Fanvil", "X4", "2.12.1", "0c383e123456")),
        (
            "Panasonic_KX-HDV130/01.133 (0080f0123456)",
            ("Panasonic", "KX-HDV130", "01.133", "0080f0123456"),
        ),
        ("PolycomVVX-VVX_411-UA/5.9.0.9373", ("Poly", "VVX 411", "5.9.0.9373", None)),
        ("baresip v2.0.0 (x86_64/linux)", (None, "baresip", "2.0.0", None)),
        ("", (None, None, None, None)),
    ],
)  # fmt: skip
def test_user_agents_name_the_phone(
    user_agent: str, expected: tuple[str | None, str | None, str | None, str | None]
) -> None:
    found = parse_user_agent(user_agent)
    assert (found.manufacturer, found.model, found.firmware, found.mac) == expected


def test_mac_addresses_are_normalised() -> None:
    assert normalise_mac("00:04:13:AB:CD:EF") == "000413abcdef"
    assert normalise_mac("00-04-13-ab-cd-ef") == "000413abcdef"
    assert normalise_mac("0004.13ab.cdef") == "000413abcdef"
    assert normalise_mac("00:04:13") is None
    assert normalise_mac("not a mac!!!") is None
    assert format_mac("000413abcdef") == "00:04:13:ab:cd:ef"


def _subscribe(uri: str, from_user: str, event: str, user_agent: str = "") -> Request:
    text = (
        f"SUBSCRIBE {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bKabc\r\n"
        f"From: <sip:{from_user}@224.0.1.75>;tag=1\r\n"
        f"To: <sip:{from_user}@224.0.1.75>\r\n"
        "Call-ID: x@192.168.1.23\r\nCSeq: 1 SUBSCRIBE\r\n"
        f"Event: {event}\r\n"
        + (f"User-Agent: {user_agent}\r\n" if user_agent else "")
        + "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def test_the_event_header_is_read_with_quotes_and_case() -> None:
    package, params = parse_event('UA-Profile;Profile-Type="device";vendor="a;b";model=x')
    assert package == "ua-profile"
    assert params == {"profile-type": "device", "vendor": "a;b", "model": "x"}


@pytest.mark.parametrize(
    ("uri", "from_user", "mac"),
    [
        ("sip:MAC%3a000413abcdef@224.0.1.75", "MAC%3a000413abcdef", "000413abcdef"),
        ("sip:224.0.1.75", "MAC=00304fa99948", "00304fa99948"),
        ("sip:224.0.1.75", "000b82112233", "000b82112233"),
    ],
)
def test_the_mac_is_found_in_each_shape(uri: str, from_user: str, mac: str) -> None:
    found = parse_ua_profile(_subscribe(uri, from_user, 'ua-profile;vendor="x";model="y"'))
    assert found is not None
    assert found.identity.mac == mac


def test_without_a_mac_in_the_uris_the_user_agent_is_asked() -> None:
    request = _subscribe(
        "sip:224.0.1.75", "00000001", "ua-profile;vendor=acme", "acme/1.0 (02:de:ad:be:ef:01)"
    )
    found = parse_ua_profile(request)
    assert found is not None
    assert found.identity == PhoneIdentity("acme", "acme", "1.0", "02deadbeef01")


def test_other_subscriptions_are_not_plug_and_play() -> None:
    request = _subscribe("sip:201@home.arpa", "201", "presence")
    assert not is_ua_profile(request)
    assert parse_ua_profile(request) is None


def test_the_directory_merges_sightings_and_is_bounded() -> None:
    clock = ManualClock()
    directory = PhoneDirectory(clock, limit=2)
    heard: list[tuple[str, bool]] = []
    directory.subscribe(lambda phone, new: heard.append((phone.key, new)))
    identity = PhoneIdentity("Snom", "D785", "10.1", "000413abcdef")
    directory.observe(Sighting(DiscoverySource.MDNS, "192.168.1.5", PhoneIdentity(None, "x")))
    clock.advance(5)
    first = directory.observe(Sighting(DiscoverySource.PLUG_AND_PLAY, "192.168.1.5", identity))
    assert first.key == "000413abcdef"
    assert first.sources == {DiscoverySource.MDNS, DiscoverySource.PLUG_AND_PLAY}
    assert first.first_seen < first.last_seen
    assert directory.get("host-192.168.1.5") is None  # the address-only record became this one
    clock.advance(5)
    directory.observe(Sighting(DiscoverySource.PLUG_AND_PLAY, "192.168.1.5", identity))
    for number in range(3):
        directory.observe(
            Sighting(
                DiscoverySource.REGISTER, "192.168.1.9", PhoneIdentity(), username=f"u{number}"
            )
        )
    assert len(directory.all()) == 2
    # The MAC made the address-only record more precise (news, but not a new phone); the same
    # sighting again changed nothing (no news).
    assert heard[:2] == [("host-192.168.1.5", True), ("000413abcdef", False)]
    assert [key for key, _ in heard].count("000413abcdef") == 1


# -- adoptions -------------------------------------------------------------------------------

ACCOUNTS = {"201": ("Desk-secret-0123456789", "Desk")}


def _provisioner(clock: ManualClock) -> Provisioner:
    return Provisioner(clock, ACCOUNTS.get)


def _arm(provisioner: Provisioner, config_format: ConfigFormat = ConfigFormat.SNOM) -> str:
    adoption = provisioner.arm(
        mac="000413abcdef",
        host="192.168.1.23",
        username="201",
        config_format=config_format,
        server_host="192.168.1.2",
        server_port=5060,
    )
    assert "Desk-secret" not in adoption.url_path()
    assert adoption.token not in repr(adoption)
    return adoption.token


def test_a_file_is_served_once_to_the_right_phone() -> None:
    clock = ManualClock()
    provisioner = _provisioner(clock)
    token = _arm(provisioner)
    assert provisioner.fetch("no-such-token", "000413abcdef.xml", "192.168.1.23") is None
    assert provisioner.fetch(token, "000413abcdef.xml", "192.168.1.99") is None  # other address
    assert provisioner.fetch(token, "0004130000ff.xml", "192.168.1.23") is None  # other MAC
    served = provisioner.fetch(token, "000413ABCDEF.xml", "192.168.1.23")
    assert served is not None
    assert provisioner.fetch(token, "000413abcdef.xml", "192.168.1.23") is None  # spent
    assert provisioner.pending("000413abcdef", "192.168.1.23") is None


def test_an_adoption_expires_after_ten_minutes() -> None:
    clock = ManualClock()
    provisioner = _provisioner(clock)
    token = _arm(provisioner)
    clock.advance(599)
    assert provisioner.pending("000413abcdef", "192.168.1.23") is not None
    clock.advance(2)
    assert provisioner.pending("000413abcdef", "192.168.1.23") is None
    assert provisioner.fetch(token, "000413abcdef.xml", "192.168.1.23") is None


def test_a_successful_register_spends_the_adoption() -> None:
    provisioner = _provisioner(ManualClock())
    token = _arm(provisioner)
    provisioner.registered("999")
    assert provisioner.adoptions()[0].state is AdoptionState.ARMED
    provisioner.registered("201")
    assert provisioner.adoptions()[0].state is AdoptionState.SPENT
    assert provisioner.fetch(token, "000413abcdef.xml", "192.168.1.23") is None


def test_a_removed_device_or_an_unwritable_value_serves_nothing() -> None:
    clock = ManualClock()
    provisioner = Provisioner(clock, {"201": ("bad\npassword", "Desk")}.get)
    token = _arm(provisioner)
    assert provisioner.fetch(token, "000413abcdef.xml", "192.168.1.23") is None
    provisioner = Provisioner(clock, {}.get)
    token = _arm(provisioner)
    assert provisioner.fetch(token, "000413abcdef.xml", "192.168.1.23") is None


def test_formats_by_vendor() -> None:
    assert format_for("snom") is ConfigFormat.SNOM
    assert format_for("Yealink") is ConfigFormat.YEALINK
    assert format_for("Grandstream") is ConfigFormat.GRANDSTREAM
    assert format_for("Gigaset") is None
    assert format_for(None) is None


def test_xml_values_are_escaped() -> None:
    account = ProvisioningAccount("192.168.1.2", 5060, "201", "a<b>&c", 'Desk "1"')
    root = ET.fromstring(render(ConfigFormat.SNOM, account, "000413abcdef").body)
    settings = root.find("phone-settings")
    assert settings is not None
    assert settings.findtext("user_pass") == "a<b>&c"
    root = ET.fromstring(render(ConfigFormat.GRANDSTREAM, account, "000b82112233").body)
    assert root.findtext("config/P34") == "a<b>&c"
    assert root.findtext("config/P3") == 'Desk "1"'


def test_the_http_server_answers_only_gets_for_the_right_file() -> None:
    provisioner = _provisioner(ManualClock())
    token = _arm(provisioner)
    server = ProvisioningServer(provisioner, "127.0.0.1", 0)
    host = "192.168.1.23"
    assert server.answer(b"garbage\r\n\r\n", host)[0] == 400
    assert server.answer(b"GET / SPDY/3\r\n\r\n", host)[0] == 400
    assert server.answer(f"POST /provision/{token}/x HTTP/1.1\r\n\r\n".encode(), host)[0] == 405
    assert server.answer(f"HEAD /provision/{token}/x HTTP/1.1\r\n\r\n".encode(), host)[0] == 405
    assert server.answer(b"GET /other HTTP/1.1\r\n\r\n", host)[0] == 404
    assert server.answer(f"GET /provision/{token}/ HTTP/1.1\r\n\r\n".encode(), host)[0] == 404
    good = f"GET /provision/{token}/000413abcdef.xml HTTP/1.1\r\n\r\n".encode()
    status, content_type, body = server.answer(good, host)
    assert (status, content_type) == (200, "application/xml")
    assert b'<user_name idx="1" perm="R">201</user_name>' in body
    assert server.answer(good, host)[0] == 404


# -- settings --------------------------------------------------------------------------------

USERS = [
    {
        "name": "alice",
        "extension": "200",
        "devices": [{"username": "201", "password": "Desk-secret-0123456789", "label": "Desk"}],
    }
]


def test_discovery_settings_load_and_round_trip() -> None:
    config = config_from_mapping(
        {
            "users": USERS,
            "discovery": {"provision": {"00:04:13:AB:CD:EF": "201"}, "http_port": 8080},
        }
    )
    assert config.discovery.plug_and_play is True
    assert config.discovery.provision == (("000413abcdef", "201"),)
    assert config_from_mapping(config.to_mapping()) == config


@pytest.mark.parametrize(
    ("discovery", "path", "words"),
    [
        ({"plug_and_play": "yes"}, "discovery.plug_and_play", "true or false"),
        ({"provision": {"00:04:13": "201"}}, 'discovery.provision["00:04:13"]', "MAC address"),
        ({"provision": {"000413abcdef": "999"}}, "discovery.provision.000413abcdef", "username"),
        ({"provision": ["000413abcdef"]}, "discovery.provision", "mapping"),
        ({"http_port": 70000}, "discovery.http_port", "between"),
        ({"listen": True}, "discovery.listen", "unknown key"),
    ],
)
def test_bad_discovery_settings_are_refused_on_their_key(
    discovery: dict[str, object], path: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"users": USERS, "discovery": discovery})
    assert caught.value.path == path
    assert words in str(caught.value)


# -- the PBX over loopback -------------------------------------------------------------------


@pytest.fixture
async def pbx() -> AsyncIterator[Pbx]:
    server = Pbx(
        parse_config(
            f"""
sip: {{listen: 127.0.0.1, port: {free_udp_port()}, domain: home.arpa}}
users:
  - name: alice
    extension: "200"
    devices:
      - {{username: "201", password: "Desk-secret-0123456789", label: Desk, type: desk}}
"""
        )
    )
    await server.start()
    yield server
    await server.stop()


async def test_loopback_pbx_does_not_listen_for_plug_and_play(pbx: Pbx) -> None:
    assert not pbx.plug_and_play_listening


async def test_a_register_for_an_unknown_username_is_noted_with_its_user_agent(pbx: Pbx) -> None:
    phone = SipPhone(
        pbx.local_address.port,
        "301",
        "whatever-it-is",
        "home.arpa",
        user_agent="Yealink SIP-T46S 66.86.0.15 00:15:65:12:34:56",
    )
    await phone.open()
    try:
        response = await phone.register()
    finally:
        phone.close()
    assert response.status == 401
    found = pbx.phones.get("001565123456")
    assert found is not None
    assert found.username == "301"
    assert found.source is DiscoverySource.REGISTER
    assert (found.identity.manufacturer, found.identity.model) == ("Yealink", "SIP-T46S")
    assert len(pbx.phones.all()) == 1  # the challenge's retry with credentials adds nothing


async def test_a_known_device_with_a_wrong_password_is_no_discovery(pbx: Pbx) -> None:
    phone = SipPhone(pbx.local_address.port, "201", "wrong-password-000", "home.arpa")
    await phone.open()
    try:
        assert (await phone.register()).status == 401
    finally:
        phone.close()
    assert pbx.phones.all() == []


async def test_the_first_successful_register_spends_the_adoption(pbx: Pbx) -> None:
    adoption = pbx.provisioner.arm(
        mac="000413abcdef",
        host="127.0.0.1",
        username="201",
        config_format=ConfigFormat.SNOM,
        server_host="127.0.0.1",
        server_port=pbx.local_address.port,
    )
    phone = SipPhone(pbx.local_address.port, "201", "Desk-secret-0123456789", "home.arpa")
    await phone.open()
    try:
        assert (await phone.register()).status == 200
    finally:
        phone.close()
    assert adoption.state is AdoptionState.SPENT
    assert pbx.provisioner.fetch(adoption.token, "000413abcdef.xml", "127.0.0.1") is None


async def test_a_unicast_plug_and_play_request_is_recorded_not_refused(pbx: Pbx) -> None:
    """Sent straight to the PBX (phones can be given a PnP server): recorded, never a 405."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        request = (
            "SUBSCRIBE sip:MAC%3a000413abcdef@224.0.1.75 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(4)};rport\r\n"
            "From: <sip:MAC%3a000413abcdef@224.0.1.75>;tag=1\r\n"
            "To: <sip:MAC%3a000413abcdef@224.0.1.75>\r\n"
            "Call-ID: pnp-1\r\nCSeq: 1 SUBSCRIBE\r\nMax-Forwards: 70\r\n"
            'Event: ua-profile;profile-type="device";vendor="snom";model="snomD785"\r\n'
            "Content-Length: 0\r\n\r\n"
        )
        await loop.sock_sendto(sock, request.encode(), ("127.0.0.1", pbx.local_address.port))
        options = (
            f"OPTIONS sip:127.0.0.1:{pbx.local_address.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(4)};rport\r\n"
            "From: <sip:probe@127.0.0.1>;tag=2\r\nTo: <sip:127.0.0.1>\r\n"
            "Call-ID: probe-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        await loop.sock_sendto(sock, options.encode(), ("127.0.0.1", pbx.local_address.port))
        first = parse_message(await asyncio.wait_for(loop.sock_recv(sock, 65535), 5.0))
    assert first.call_id == "probe-1"  # the SUBSCRIBE got nothing before the probe's 200
    found = pbx.phones.get("000413abcdef")
    assert found is not None
    assert found.identity.model == "D785"
