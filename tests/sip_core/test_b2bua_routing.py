"""Where the B2BUA sends a call for a registered device: the Contact, or the source behind NAT.

The rule itself (`sip_core.registrar.route_to_contact`) is tested in test_registrar.py; these
tests check that calls and the dialog that follows really go where the rule says.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sip_core.registrar import Binding
from sip_core.transport import Address, Source, TransportKind

from .test_b2bua_harness import HOST, PBX, Harness, Phone, connect, ring


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def _register_for(h: Harness, phone: Phone, contact: str, source: Address) -> None:
    """A binding for ``phone``'s device made by a REGISTER from ``source`` naming ``contact``."""
    clock = h.clock
    h.registrations.setdefault(phone.username, []).append(
        Binding(
            phone.username,
            contact,
            clock.monotonic() + 3600,
            clock.wall(),
            clock.wall() + 3600,
            f"reg-{phone.username}",
            1,
            Source(TransportKind.UDP, source, PBX, None),
        )
    )


async def test_call_goes_to_the_contact_not_the_register_source(h: Harness) -> None:
    """A device registered by another program (from port 5999) listens where its Contact says."""
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401, register=False)
    registering_program = Phone(h, "401", 5999)
    _register_for(h, carol, f"<sip:401@{HOST}:5401>", registering_program.address)
    _invite, offered = await connect(h, alice, carol, "400")
    assert offered.uri.port == 5401
    assert registering_program.inbox() == []
    # The dialog stays on the Contact: the BYE reaches the callee there too.
    alice.request("BYE")
    assert len(carol.requests("BYE")) == 1
    assert registering_program.inbox() == []


async def test_call_behind_nat_goes_to_the_register_source(h: Harness) -> None:
    """A private Contact address seen from elsewhere: the call goes back where the REGISTER came
    from, with the Contact as Request-URI."""
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401, register=False)
    _register_for(h, carol, "<sip:401@192.168.1.20:5060>", carol.address)
    await ring(h, alice, "400")
    (offered,) = carol.requests("INVITE")
    assert str(offered.uri) == "sip:401@192.168.1.20:5060"
