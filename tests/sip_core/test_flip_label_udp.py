"""The flip menu with a device's label recording, over real UDP: what the keying phone receives.

Alice's desk (201) talks to Carol; she has a mobile (202) and a softphone (203). The mobile's
label is given as a recording (`Pbx.set_label_prompt`: here a 1 kHz tone standing for the spoken
label), the softphone has none. The RTP the desk's socket receives must be "press 1 for" in the
bundled prompts, then the recording, then "press 2 for your softphone" in the bundled prompts:
checked byte for byte for the bundled parts (they are stored as µ-law) and by its energy at
1 kHz and its length for the recording.
"""

from __future__ import annotations

import asyncio
import socket
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sip_core.audio import prompt
from sip_core.audio.g711 import ulaw_decode, ulaw_encode
from sip_core.config import Device, DeviceType, PbxConfig, RtpSettings, SipSettings, User
from sip_core.message import Request, new_tag
from sip_core.pbx import Pbx

from .audio_signal import goertzel_share, rms, sine
from .test_b2bua_udp import DOMAIN, HOST, PASSWORD, UdpPhone
from .test_flip_udp import RTP_MAX, RTP_MIN, answer, rtp_socket, sdp, udp_phone

LABEL_SECONDS = 0.6
TONE_HZ = 1000


def write_label(path: Path) -> None:
    """A 16 kHz mono WAV (as Home Assistant's TTS is asked for): a 1 kHz tone."""
    samples = sine(TONE_HZ, 8000, 16000, int(16000 * LABEL_SECONDS))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))


@pytest.fixture
async def pbx() -> AsyncIterator[Pbx]:
    alice = User(
        "Alice",
        "200",
        (
            Device("201", PASSWORD, "Desk", DeviceType.DESK),
            Device("202", PASSWORD, "Kitchen", DeviceType.MOBILE),
            Device("203", PASSWORD, "Laptop", DeviceType.SOFTPHONE),
        ),
    )
    config = PbxConfig(
        sip=SipSettings(listen=HOST, port=0, domain=DOMAIN),
        rtp=RtpSettings(RTP_MIN, RTP_MAX),
        users=(alice, User("Carol", "400", (Device("401", PASSWORD, "desk"),))),
    )
    instance = Pbx(config)
    await instance.start()
    yield instance
    await instance.stop()


async def carol_calls_desk(pbx: Pbx, carol: UdpPhone, desk: UdpPhone, desk_rtp: int) -> None:
    uri = f"sip:201@{DOMAIN}"
    tag, call_id = new_tag(), new_tag()
    common = [
        f"From: <sip:401@{DOMAIN}>;tag={tag}",
        f"To: <{uri}>",
        f"Call-ID: {call_id}",
        f"Contact: <sip:401@{HOST}:{carol.port}>",
        "Content-Type: application/sdp",
    ]
    carol.send([f"INVITE {uri} SIP/2.0", carol.via(), "CSeq: 1 INVITE", *common], sdp(30010))
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
        sdp(30010),
    )
    offered: Request = await desk.request("INVITE")
    answer(desk, offered, 200, new_tag(), sdp(desk_rtp))
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


def receive_playback(sock: socket.socket) -> bytes:
    """The PCMU payloads received until the stream pauses for a second (the prompt ended)."""
    sock.settimeout(5)  # the first packet (the engine reads the recording first)
    payloads: list[bytes] = []
    while True:
        try:
            data = sock.recv(2048)
        except TimeoutError:
            return b"".join(payloads)
        assert data[1] & 0x7F == 0  # PCMU
        payloads.append(data[12:])
        sock.settimeout(1)


def ulaw(*names: str) -> bytes:
    return b"".join(ulaw_encode(prompt(name, 8000).samples) for name in names)


async def test_menu_speaks_the_given_label_and_the_type_for_the_others(
    pbx: Pbx, tmp_path: Path
) -> None:
    label = tmp_path / "kitchen.wav"
    write_label(label)
    pbx.set_label_prompt("202", str(label))
    assert pbx.label_prompts == {"202": str(label)}
    with pytest.raises(ValueError, match="no device"):
        pbx.set_label_prompt("999", str(label))
    carol = await udp_phone(pbx, "401")
    desk = await udp_phone(pbx, "201")
    mobile = await udp_phone(pbx, "202")
    soft = await udp_phone(pbx, "203")
    desk_rtp = rtp_socket()
    try:
        await carol_calls_desk(pbx, carol, desk, desk_rtp.getsockname()[1])
        (call,) = pbx.calls()
        assert call.callee is not None
        pbx._b2bua.flip_feature.on_code(call.callee, "*0")  # as if the desk keyed *0
        loop = asyncio.get_running_loop()
        received = await loop.run_in_executor(None, receive_playback, desk_rtp)
    finally:
        desk_rtp.close()
        for phone in (carol, desk, mobile, soft):
            assert phone.transport is not None
            phone.transport.close()
    head = ulaw("press", "1", "for")
    tail = ulaw("press", "2", "for", "your", "softphone")
    assert received.startswith(head)
    end = received.find(tail, len(head))
    assert end > 0, "the softphone's line is the bundled type prompt"
    assert received[end + len(tail) :].strip(b"\xff\x7f") == b""  # then only the last frame's pad
    recording = ulaw_decode(received[len(head) : end])
    assert abs(len(recording) / 8000 - LABEL_SECONDS) < 0.01
    assert rms(recording) > 4000
    assert goertzel_share(recording, 8000, TONE_HZ) > 0.9
    # The mobile's line has its recording instead of its type: "your mobile" is not heard.
    assert ulaw("your", "mobile") not in received
