"""A flip over real UDP on 127.0.0.1: the target gets an SDP offer and answers it in its 200.

Signalling and media both go over sockets: the PBX's SIP port and the relay's RTP ports, with the
phones' own RTP sockets, so the test shows the offered port really carries the call afterwards.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator

import pytest

from sip_core.audio import PlaySilence
from sip_core.call_audio import NoCallInProgress, PlaySide
from sip_core.call_snapshot import DeviceActivity
from sip_core.config import Device, PbxConfig, RtpSettings, SipSettings, User
from sip_core.message import Request, Response, new_tag
from sip_core.pbx import Pbx
from sip_core.sdp import parse_sdp

from .test_b2bua_udp import DOMAIN, HOST, PASSWORD, UdpPhone

# Every test here runs against an engine forwarding in Python and one forwarding in C.
pytestmark = pytest.mark.usefixtures("packet_path")

RTP_MIN, RTP_MAX = 45000, 45999


def sdp(port: int, formats: str = "0", extra: str = "") -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {formats}\r\na=rtpmap:0 PCMU/8000\r\n{extra}"
    ).encode()


def rtp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(5)
    return sock


def rtp_packet(sequence: int, payload_type: int = 0) -> bytes:
    header = bytes([0x80, payload_type]) + sequence.to_bytes(2) + (160 * sequence).to_bytes(4)
    return header + (0x1234).to_bytes(4) + b"\xff" * 160


def audio_port(body: bytes) -> int:
    match = re.search(rb"m=audio (\d+)", body)
    assert match is not None, body
    return int(match.group(1))


async def until_bindable(port: int) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((HOST, port))
                return
            except OSError:
                assert asyncio.get_running_loop().time() < deadline, f"port {port} stays bound"
        await asyncio.sleep(0.01)


@pytest.fixture
async def pbx() -> AsyncIterator[Pbx]:
    config = PbxConfig(
        sip=SipSettings(listen=HOST, port=0, domain=DOMAIN),
        rtp=RtpSettings(RTP_MIN, RTP_MAX),
        users=(
            User(
                "Alice", "200", (Device("201", PASSWORD, "desk"), Device("202", PASSWORD, "mobile"))
            ),
            User("Carol", "400", (Device("401", PASSWORD, "desk"),)),
        ),
    )
    instance = Pbx(config)
    await instance.start()
    yield instance
    await instance.stop()


async def udp_phone(pbx: Pbx, username: str) -> UdpPhone:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: UdpPhone(username, pbx.local_address.port), local_addr=(HOST, 0)
    )
    await protocol.register()
    return protocol


def answer(phone: UdpPhone, invite: Request, status: int, tag: str, body: bytes = b"") -> None:
    lines = [
        f"SIP/2.0 {status} {'OK' if status == 200 else 'Ringing'}",
        *[f"Via: {v}" for v in invite.headers.get_all("Via")],
        f"From: {invite.headers.get('From')}",
        f"To: {invite.headers.get('To')};tag={tag}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {invite.cseq.number} INVITE",
        f"Contact: <sip:{phone.username}@{HOST}:{phone.port}>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    phone.send(lines, body)


async def call_carol_to_desk(pbx: Pbx, carol: UdpPhone, desk: UdpPhone, carol_rtp: int) -> Response:
    """Carol (401) dials Alice's desk (201), which answers; returns the 200 Carol got."""
    uri = f"sip:201@{DOMAIN}"
    tag, call_id = new_tag(), new_tag()
    common = [
        f"From: <sip:401@{DOMAIN}>;tag={tag}",
        f"To: <{uri}>",
        f"Call-ID: {call_id}",
        f"Contact: <sip:401@{HOST}:{carol.port}>",
        "Content-Type: application/sdp",
    ]
    carol.send([f"INVITE {uri} SIP/2.0", carol.via(), "CSeq: 1 INVITE", *common], sdp(carol_rtp))
    challenge = await carol.response(407, "INVITE")
    auth = carol.credentials(challenge.headers.get("Proxy-Authenticate") or "", "INVITE", uri)
    carol.send(
        [
            f"INVITE {uri} SIP/2.0",
            carol.via(),
            "CSeq: 2 INVITE",
            *common,
            f"Proxy-Authorization: {auth}",
        ],
        sdp(carol_rtp),
    )
    offered = await desk.request("INVITE")
    answer(desk, offered, 200, new_tag(), sdp(30002))
    ok = await carol.response(200, "INVITE")
    carol.send(
        [
            f"ACK {ok.contacts[0].uri} SIP/2.0",
            carol.via(),
            "CSeq: 2 ACK",
            f"From: <sip:401@{DOMAIN}>;tag={tag}",
            f"To: {ok.headers.get('To')}",
            f"Call-ID: {call_id}",
        ]
    )
    await desk.request("ACK")
    return ok


async def test_flip_target_gets_an_offer_and_its_answer_carries_the_media(pbx: Pbx) -> None:
    carol = await udp_phone(pbx, "401")
    desk = await udp_phone(pbx, "201")
    mobile = await udp_phone(pbx, "202")
    carol_rtp, mobile_rtp = rtp_socket(), rtp_socket()
    try:
        ok = await call_carol_to_desk(pbx, carol, desk, carol_rtp.getsockname()[1])
        (call,) = pbx.calls()
        future = pbx.flip(call.id, "202")
        invite = await mobile.request("INVITE")
        # What the outside reads: a snapshot, and the one rule for each device's activity.
        (snapshot,) = pbx.call_snapshots()
        assert pbx.call_snapshot(call.id) == snapshot
        assert pbx.call_snapshot("nope") is None
        assert snapshot.pending_flip is not None
        assert snapshot.pending_flip.to_device == "202"
        assert pbx.device_activity("202") is DeviceActivity.RINGING
        assert pbx.device_activity("201") is DeviceActivity.TALKING
        assert pbx.device_activity("401") is DeviceActivity.TALKING
        assert pbx.device_activity("302") is None
        assert invite.headers.get("Content-Type") == "application/sdp"
        offer = parse_sdp(invite.body)
        audio = offer.audio()
        assert audio is not None
        offered_port = audio.port
        assert RTP_MIN <= offered_port <= RTP_MAX
        assert audio.effective_connection(offer) is not None
        assert audio.effective_connection(offer).address == HOST  # type: ignore[union-attr]
        # The codecs Carol and the desk agreed on (PCMU), plus telephone-event for the keys.
        assert [(c.encoding, c.clock_rate) for c in audio.codecs()] == [
            ("PCMU", 8000),
            ("telephone-event", 8000),
        ]
        assert [m.media for m in offer.media] == ["audio"]
        answer(
            mobile,
            invite,
            200,
            new_tag(),
            sdp(mobile_rtp.getsockname()[1], "0 101", "a=rtpmap:101 telephone-event/8000\r\n"),
        )
        ack = await mobile.request("ACK")
        assert ack.call_id == invite.call_id
        assert ack.body == b""  # the offer was in the INVITE, the answer in the 200
        record = await asyncio.wait_for(future, 5)
        assert record.succeeded
        bye = await desk.request("BYE")
        assert bye.call_id != invite.call_id
        assert call.callee is not None
        assert call.callee.device == "202"
        # Media: Carol's audio reaches the mobile, the mobile's reaches Carol, via the offered port.
        loop = asyncio.get_running_loop()
        relay_for_carol = audio_port(ok.body)
        carol_rtp.sendto(rtp_packet(1), (HOST, relay_for_carol))
        data = await loop.run_in_executor(None, mobile_rtp.recv, 2048)
        assert data[12:] == b"\xff" * 160
        mobile_rtp.sendto(rtp_packet(7), (HOST, offered_port))
        data = await loop.run_in_executor(None, carol_rtp.recv, 2048)
        assert data[1] & 0x7F == 0
        assert len(data) == 172
    finally:
        carol_rtp.close()
        mobile_rtp.close()
        for phone in (carol, desk, mobile):
            assert phone.transport is not None
            phone.transport.close()


async def test_flip_target_answering_without_sdp_is_released_and_the_call_stays(
    pbx: Pbx,
) -> None:
    carol = await udp_phone(pbx, "401")
    desk = await udp_phone(pbx, "201")
    mobile = await udp_phone(pbx, "202")
    carol_rtp = rtp_socket()
    try:
        await call_carol_to_desk(pbx, carol, desk, carol_rtp.getsockname()[1])
        (call,) = pbx.calls()
        future = pbx.flip(call.id, "202")
        invite = await mobile.request("INVITE")
        offered_port = audio_port(invite.body)
        answer(mobile, invite, 200, new_tag())
        await mobile.request("ACK")
        bye = await mobile.request("BYE")
        assert bye.call_id == invite.call_id
        record = await asyncio.wait_for(future, 5)
        assert not record.succeeded
        assert "without an SDP answer" in record.reason
        assert call.callee is not None
        assert call.callee.device == "201"
        # The spare sockets named in the offer are closed: the port can be bound again (once
        # the media engine has carried out the close; waiting is bounded, not measured).
        await until_bindable(offered_port)
    finally:
        carol_rtp.close()
        for phone in (carol, desk, mobile):
            assert phone.transport is not None
            phone.transport.close()


async def test_play_is_checked_and_goes_to_the_call_it_names(pbx: Pbx) -> None:
    carol = await udp_phone(pbx, "401")
    desk = await udp_phone(pbx, "201")
    carol_rtp = rtp_socket()
    try:
        await call_carol_to_desk(pbx, carol, desk, carol_rtp.getsockname()[1])
        (snapshot,) = pbx.call_snapshots()
        assert pbx.check_play(device="201", side=PlaySide.OTHER) == snapshot.id
        assert pbx.check_play(user="Carol") == snapshot.id
        with pytest.raises(NoCallInProgress):
            pbx.check_play(device="202")
        with pytest.raises(NoCallInProgress):  # not another call than the one named
            pbx.play(PlaySilence(200), device="201", call_id="gone")
        playback = pbx.play(PlaySilence(200), device="201", call_id=snapshot.id)
        assert playback.call_id == snapshot.id
        assert playback.devices == ("401", "201")
        playback.stop()
        await asyncio.wait_for(playback.wait(), 5)
    finally:
        carol_rtp.close()
        for phone in (carol, desk):
            assert phone.transport is not None
            phone.transport.close()
