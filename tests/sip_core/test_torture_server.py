"""RFC 4475's application-level rows, through the whole server.

The parser accepts these messages (or rejects them with a basis), and RFC 4475 says what the
*application* must answer: 420 for an unknown Require, 483 for Max-Forwards 0, 415 for a body it
cannot read, 416 for a scheme it does not serve... Here each one goes into a running `Pbx` as a
datagram and the answer on the wire is checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sip_core.config import parse_config
from sip_core.message import Response, parse_message
from sip_core.pbx import Pbx
from sip_core.transport import Address, Source, TransportKind
from tests.sip_core.test_pbx import free_udp_port
from tests.sip_core.test_torture import ROWS, Torture

SERVED = [row for row in ROWS if row.application_status is not None]


def expected(row: Torture) -> list[int]:
    """What goes on the wire. §3.3.1 (insuf) asks for a 400, but the request has no From, To or
    Call-ID: a response without them is itself malformed (RFC 3261 §8.2.6 copies them) and the
    client's stack would discard it, so the server drops the request instead."""
    if row.parse_status != "accept" and row.basis is False:
        return []
    assert row.application_status is not None
    return [row.application_status]


@pytest.fixture
async def wire() -> AsyncIterator[tuple[Pbx, list[bytes]]]:
    config = parse_config(
        f"sip: {{listen: 127.0.0.1, port: {free_udp_port()}, domain: example.com}}\n"
        "users:\n"
        "  - name: j_user\n"
        '    extension: "200"\n'
        "    devices:\n"
        '      - {username: "j.user", password: "torture-secret"}\n'
    )
    pbx = Pbx(config)
    await pbx.start()
    sent: list[bytes] = []
    udp = pbx._transport._udp  # the datagrams the server sends, instead of the network
    assert udp is not None
    udp.sendto = lambda data, addr=None: sent.append(bytes(data))  # type: ignore[method-assign]
    yield pbx, sent
    await pbx.stop()


@pytest.mark.parametrize("row", SERVED, ids=[f"{r.section}-{r.name}" for r in SERVED])
async def test_application_answers_as_rfc4475_says(
    wire: tuple[Pbx, list[bytes]], row: Torture
) -> None:
    pbx, sent = wire
    source = Source(TransportKind.UDP, Address("192.0.2.1", 5060), pbx.local_address, None)
    pbx._transport._handle_datagram(row.data, source)
    await asyncio.sleep(0)
    finals = [
        m for m in (parse_message(d) for d in sent) if isinstance(m, Response) and m.status >= 200
    ]
    assert [m.status for m in finals] == expected(row)
