"""Dialogs (RFC 3261 §12): creation on both sides, in-dialog requests, CSeq order, targets."""

from __future__ import annotations

import pytest

from sip_core.dialog import Dialog, DialogError, LocalEndpoint, build_request
from sip_core.message import Request, Response, make_response, parse_message
from sip_core.transport import Address, Source, TransportKind
from sip_core.uri import SipUri

PHONE = Address("192.0.2.10", 5070)
US = LocalEndpoint("127.0.0.1", 5060)
SOURCE = Source(TransportKind.UDP, PHONE, Address("127.0.0.1", 5060), None)


def invite(*, from_tag: str | None = "ft", contact: bool = True, rr: str = "") -> Request:
    text = (
        "INVITE sip:300@home.arpa SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKa1\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:201@home.arpa>{';tag=' + from_tag if from_tag else ''}\r\n"
        "To: <sip:300@home.arpa>\r\n"
        "Call-ID: c1@x\r\nCSeq: 10 INVITE\r\n"
        + ("Contact: <sip:201@10.0.0.5:5070>\r\n" if contact else "")
        + rr
        + "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def test_uas_dialog_takes_ids_target_and_route_set_from_the_invite() -> None:
    request = invite(rr="Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n")
    dialog = Dialog.as_uas(request, SOURCE, local_tag="mine", endpoint=US)
    assert dialog.key == ("c1@x", "mine")
    assert dialog.remote_tag == "ft"
    assert str(dialog.remote_target) == "sip:201@10.0.0.5:5070"
    assert dialog.destination == PHONE  # where its packets came from, not its Contact
    assert dialog.route_set == ["<sip:p1;lr>", "<sip:p2;lr>"]
    bye = dialog.create_request("BYE")
    assert bye.to.tag == "ft"
    assert bye.from_.tag == "mine"
    assert [str(r.uri) for r in bye.routes] == ["sip:p1;lr", "sip:p2;lr"]
    assert bye.cseq.number == dialog.local_cseq


@pytest.mark.parametrize(("from_tag", "contact"), [(None, True), ("ft", False)])
def test_uas_dialog_needs_a_from_tag_and_a_contact(from_tag: str | None, contact: bool) -> None:
    with pytest.raises(DialogError):
        Dialog.as_uas(
            invite(from_tag=from_tag, contact=contact), SOURCE, local_tag="t", endpoint=US
        )


def ours() -> Request:
    return build_request(
        "INVITE",
        SipUri.parse("sip:301@192.0.2.20:5080"),
        endpoint=US,
        from_value="<sip:200@home.arpa>;tag=ours",
        to_value="<sip:301@home.arpa>",
        call_id="leg-b",
        cseq=5,
    )


def answer(request: Request, rr: str = "") -> Response:
    response = make_response(request, 200, to_tag="theirs")
    response.headers.add("Contact", "<sip:301@192.0.2.20:5090>")
    if rr:
        response.headers.add("Record-Route", rr)
    return response


def test_uac_dialog_reverses_the_route_set_and_acks_with_the_invite_cseq() -> None:
    request = ours()
    assert request.headers.get("Contact") == US.contact
    dialog = Dialog.as_uac(
        request, answer(request, "<sip:p1;lr>, <sip:p2;lr>"), destination=PHONE, endpoint=US
    )
    assert dialog.route_set == ["<sip:p2;lr>", "<sip:p1;lr>"]
    ack = dialog.create_ack(5)
    assert (ack.method, ack.cseq.number, ack.cseq.method) == ("ACK", 5, "ACK")
    assert str(ack.uri) == "sip:301@192.0.2.20:5090"
    reinvite = dialog.create_request("INVITE")
    bye = dialog.create_request("BYE")
    assert reinvite.cseq.number == 6
    assert bye.cseq.number == 7
    assert reinvite.top_via.branch != bye.top_via.branch


def test_uac_dialog_needs_the_remote_tag() -> None:
    request = ours()
    response = make_response(request, 200, to_tag="x")
    response.headers.set("To", "<sip:301@home.arpa>")
    with pytest.raises(DialogError):
        Dialog.as_uac(request, response, destination=PHONE, endpoint=US)


def test_remote_cseq_must_grow_but_ack_and_cancel_do_not_count() -> None:
    dialog = Dialog.as_uas(invite(), SOURCE, local_tag="mine", endpoint=US)
    request = invite()
    request.headers.set("CSeq", "10 BYE")
    request.method = "BYE"
    assert not dialog.accept_remote_cseq(request)
    request.headers.set("CSeq", "11 BYE")
    assert dialog.accept_remote_cseq(request)
    request.method = "ACK"
    request.headers.set("CSeq", "10 ACK")
    assert dialog.accept_remote_cseq(request)


def test_target_refresh_moves_the_remote_target() -> None:
    dialog = Dialog.as_uas(invite(), SOURCE, local_tag="mine", endpoint=US)
    refresh = invite()
    refresh.headers.set("Contact", "<sip:201@10.0.0.9:6000>")
    dialog.refresh_target(refresh)
    assert str(dialog.remote_target) == "sip:201@10.0.0.9:6000"
    assert dialog.matches(_with_to_tag(invite(), "mine"))
    assert not dialog.matches(_with_to_tag(invite(), "other"))


def test_tcp_endpoint_says_so_in_via_and_contact() -> None:
    endpoint = LocalEndpoint("::1", 5060, TransportKind.TCP)
    assert endpoint.contact == "<sip:callflip@[::1]:5060;transport=tcp>"
    assert endpoint.via().startswith("SIP/2.0/TCP [::1]:5060;branch=z9hG4bK")


def _with_to_tag(request: Request, tag: str) -> Request:
    request.headers.set("To", f"<sip:300@home.arpa>;tag={tag}")
    return request
