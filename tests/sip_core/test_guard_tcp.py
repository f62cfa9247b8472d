"""TCP limits against floods: connections per source address, messages that never finish."""

from __future__ import annotations

import asyncio

from sip_core.clock import ManualClock
from sip_core.transport import MAX_CONNECTIONS_PER_SOURCE, TransportLayer

from .test_transport import (
    is_closed_by_peer,
    read_message,
    running,
    sip_request,
    tcp_connect,
)


async def connect_from(
    layer: TransportLayer, host: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = layer.local_address
    return await asyncio.open_connection(address.host, address.port, local_addr=(host, 0))


async def settled(layer: TransportLayer, count: int) -> None:
    async with asyncio.timeout(5):
        while layer.connection_count != count:  # noqa: ASYNC110 - until the layer has seen them
            await asyncio.sleep(0.01)


def test_the_default_cap_allows_a_household_behind_one_address() -> None:
    assert MAX_CONNECTIONS_PER_SOURCE >= 8


async def test_connections_beyond_the_cap_from_one_source_are_closed_others_unaffected() -> None:
    async with running(max_connections_per_source=3) as (layer, inbox):
        kept = [await connect_from(layer, "127.0.0.2") for _ in range(3)]
        await settled(layer, 3)
        extra_reader, extra_writer = await connect_from(layer, "127.0.0.2")
        assert await is_closed_by_peer(extra_reader)
        await settled(layer, 3)
        # Another address still gets in, and the kept connections still work.
        other_reader, other_writer = await connect_from(layer, "127.0.0.3")
        other_writer.write(sip_request("SIP/2.0/TCP 127.0.0.3:5999;branch=z9hG4bKo1"))
        await inbox.next()
        assert (await read_message(other_reader)).top_via.branch == "z9hG4bKo1"  # type: ignore[union-attr]
        reader, writer = kept[0]
        writer.write(sip_request("SIP/2.0/TCP 127.0.0.2:5999;branch=z9hG4bKk1"))
        await inbox.next()
        await read_message(reader)
        # Once one closes, the source may open another.
        kept[1][1].close()
        await settled(layer, 3)
        again_reader, again_writer = await connect_from(layer, "127.0.0.2")
        again_writer.write(sip_request("SIP/2.0/TCP 127.0.0.2:5999;branch=z9hG4bKa1"))
        await inbox.next()
        await read_message(again_reader)
        for _, w in (
            *kept,
            (extra_reader, extra_writer),
            (other_reader, other_writer),
            (again_reader, again_writer),
        ):
            w.close()


async def test_a_message_that_never_finishes_is_cut_off() -> None:
    clock = ManualClock()
    async with running(clock=clock, message_timeout=32.0) as (layer, inbox):
        slow_reader, slow_writer = await tcp_connect(layer.local_address)
        steady_reader, steady_writer = await tcp_connect(layer.local_address)
        whole = sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKs1")
        slow_writer.write(whole[:40])  # begun, never finished
        await slow_writer.drain()
        await asyncio.sleep(0.05)
        clock.advance(20)
        slow_writer.write(whole[40:60])  # trickling does not restart the clock
        await slow_writer.drain()
        await asyncio.sleep(0.05)
        # A connection that sends whole messages is never affected.
        steady_writer.write(sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKs2"))
        await inbox.next()
        await read_message(steady_reader)
        clock.advance(12.5)
        assert await is_closed_by_peer(slow_reader)
        steady_writer.write(sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKs3"))
        await inbox.next()
        await read_message(steady_reader)
        assert layer.connection_count == 1
        slow_writer.close()
        steady_writer.close()


async def test_a_message_finished_in_time_resets_the_clock() -> None:
    clock = ManualClock()
    async with running(clock=clock, message_timeout=32.0) as (layer, inbox):
        reader, writer = await tcp_connect(layer.local_address)
        for index in range(3):
            whole = sip_request(f"SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKr{index}")
            writer.write(whole[:30])
            await writer.drain()
            await asyncio.sleep(0.05)
            clock.advance(30)
            writer.write(whole[30:])
            await inbox.next()
            await read_message(reader)
        clock.advance(100)
        assert layer.connection_count == 1
        writer.close()
