"""SIP over TLS on real sockets (RFC 3261 §26.3.1): a listener with a certificate from a test CA
made here, clients that verify it (CA file, host name, SNI) or refuse it, and connection reuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sip_core.message import Request, Response, make_response, parse_message
from sip_core.tls import TlsSetupError, client_context, failure_reason, server_context
from sip_core.transport import Address, TransportError, TransportKind, TransportLayer
from tests.tls_certs import ServerFiles, TestCa

from .test_transport import WAIT, Inbox, sip_request


def _request(via_port: int, method: str = "OPTIONS") -> Request:
    message = parse_message(
        sip_request(f"SIP/2.0/TLS 127.0.0.1:{via_port};branch=z9hG4bKt{method}", method=method)
    )
    assert isinstance(message, Request)
    return message


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestCa.create(tmp_path / "ca")


@pytest.fixture
def server_files(ca: TestCa, tmp_path: Path) -> ServerFiles:
    return ca.issue(tmp_path / "server")


@contextlib.asynccontextmanager
async def layer(inbox: Inbox, files: ServerFiles | None = None) -> AsyncIterator[TransportLayer]:
    context = None if files is None else server_context(str(files.certificate), str(files.key))
    transport = TransportLayer("127.0.0.1", 0, inbox, tls_context=context, tls_port=0)
    inbox.layer = transport
    await transport.start()
    try:
        yield transport
    finally:
        await transport.stop()


async def _failure(transport: TransportLayer, request: Request, target: Address) -> Exception:
    failed: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
    transport.send_request(request, target, TransportKind.TLS, on_failure=failed.set_result)
    return await asyncio.wait_for(failed, WAIT)


async def test_a_request_over_tls_is_answered_on_the_same_connection(
    ca: TestCa, server_files: ServerFiles
) -> None:
    server_inbox, client_inbox = Inbox(answer=200), Inbox()
    async with layer(server_inbox, server_files) as server, layer(client_inbox) as client:
        assert server.tls_address is not None
        assert server.tls_address.port != server.local_address.port
        target = Address("127.0.0.1", server.tls_address.port)
        client.set_tls_client(target, client_context(str(ca.ca_file)))
        client.send_request(_request(client.local_address.port), target, TransportKind.TLS)
        request, source = await server_inbox.next()
        assert isinstance(request, Request)
        assert source.kind is TransportKind.TLS
        assert request.top_via.transport == "TLS"
        response, answer_source = await client_inbox.next()
        assert isinstance(response, Response)
        assert response.status == 200
        assert answer_source.kind is TransportKind.TLS
        assert answer_source.remote == target
        assert client.connection_count == 1  # the answer came back on our connection


async def test_the_server_reaches_the_client_on_the_connection_the_client_opened(
    ca: TestCa, server_files: ServerFiles
) -> None:
    """A provider's INVITE or OPTIONS to us travels the connection our REGISTER opened: the
    client has no TLS listener at all, so there is no other way in."""
    server_inbox, client_inbox = Inbox(answer=200), Inbox(answer=200)
    async with layer(server_inbox, server_files) as server, layer(client_inbox) as client:
        assert server.tls_address is not None
        assert client.tls_address is None
        target = Address("localhost", server.tls_address.port)  # by name, as a trunk's host
        client.set_tls_client(target, client_context(str(ca.ca_file)))
        client.send_request(
            _request(client.local_address.port, "REGISTER"), target, TransportKind.TLS
        )
        _register, source = await server_inbox.next()
        await client_inbox.next()  # the 200
        server.send_request(_request(server.tls_address.port), source.remote, TransportKind.TLS)
        request, on_client = await client_inbox.next()
        assert isinstance(request, Request)
        assert request.method == "OPTIONS"
        assert on_client.kind is TransportKind.TLS
        answer, _ = await server_inbox.next()
        assert isinstance(answer, Response)
        assert answer.status == 200
        assert server.connection_count == 1
        assert client.connection_count == 1


@pytest.mark.parametrize("wrong", ["ca", "host"])
async def test_a_certificate_the_client_must_not_trust_fails_the_connection(
    ca: TestCa, tmp_path: Path, wrong: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Signed by another CA, or for another name: nothing is sent, and the failure says why."""
    if wrong == "ca":
        files = TestCa.create(tmp_path / "other", "other CA").issue(tmp_path / "server")
    else:
        files = ca.issue(tmp_path / "server", ("sip.provider.example",))
    server_inbox = Inbox(answer=200)
    async with layer(server_inbox, files) as server, layer(Inbox()) as client:
        assert server.tls_address is not None
        target = Address("127.0.0.1", server.tls_address.port)
        client.set_tls_client(target, client_context(str(ca.ca_file)))
        with caplog.at_level(logging.WARNING, "sip_core.transport"):
            error = await _failure(client, _request(client.local_address.port), target)
        assert isinstance(error, TransportError)
        assert str(error).startswith("certificate verify failed: "), error
        if wrong == "ca":
            assert "unable to get local issuer certificate" in str(error)
        else:
            assert "mismatch" in str(error).lower(), error
        assert "certificate verify failed" in caplog.text
        await asyncio.sleep(0.1)
        assert server_inbox.items.empty()
        assert client.connection_count == 0


async def test_the_system_trust_refuses_a_private_ca(server_files: ServerFiles) -> None:
    """Without a CA file the system's authorities decide: a test CA is not one of them."""
    async with layer(Inbox(), server_files) as server, layer(Inbox()) as client:
        assert server.tls_address is not None
        target = Address("127.0.0.1", server.tls_address.port)
        error = await _failure(client, _request(client.local_address.port), target)
        assert "certificate verify failed" in str(error)


async def test_without_verification_any_certificate_is_accepted(tmp_path: Path) -> None:
    files = TestCa.create(tmp_path / "other", "other CA").issue(tmp_path / "s", ("elsewhere",))
    server_inbox, client_inbox = Inbox(answer=200), Inbox()
    async with layer(server_inbox, files) as server, layer(client_inbox) as client:
        assert server.tls_address is not None
        target = Address("127.0.0.1", server.tls_address.port)
        client.set_tls_client(target, client_context(verify=False))
        client.send_request(_request(client.local_address.port), target, TransportKind.TLS)
        response, _ = await client_inbox.next()
        assert isinstance(response, Response)
        assert response.status == 200


async def test_plain_tcp_to_the_tls_port_never_reaches_the_handler(
    server_files: ServerFiles,
) -> None:
    """Clear text on the TLS port fails the handshake; the listener keeps serving."""
    server_inbox = Inbox(answer=200)
    async with layer(server_inbox, server_files) as server:
        assert server.tls_address is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.tls_address.port)
        writer.write(sip_request("SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKclear"))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed on us
        writer.close()
        assert server_inbox.items.empty()


async def test_garbage_over_tls_closes_that_connection_only(
    ca: TestCa, server_files: ServerFiles
) -> None:
    server_inbox = Inbox(answer=200)
    async with layer(server_inbox, server_files) as server:
        assert server.tls_address is not None
        context = client_context(str(ca.ca_file))
        port = server.tls_address.port
        _bad_reader, bad = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
        )
        good_reader, good = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
        )
        bad.write(b"\x00" * 70_000)
        good.write(sip_request("SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bKgood"))
        answer = await asyncio.wait_for(good_reader.readuntil(b"\r\n\r\n"), WAIT)
        assert answer.startswith(b"SIP/2.0 200 ")
        for writer in (bad, good):
            writer.close()


async def test_a_response_to_a_tls_request_whose_connection_closed_opens_a_new_one(
    ca: TestCa, server_files: ServerFiles
) -> None:
    """RFC 3261 §18.2.2: the connection gone, the response goes to the Via's sent-by over TLS
    (its port: the client's TLS listener)."""
    client_files = ca.issue(Path(server_files.certificate).parent / "client", stem="client")
    server_inbox, client_inbox = Inbox(), Inbox()
    async with (
        layer(server_inbox, server_files) as server,
        layer(client_inbox, client_files) as client,
    ):
        assert server.tls_address is not None
        assert client.tls_address is not None
        target = Address("127.0.0.1", server.tls_address.port)
        client.set_tls_client(target, client_context(str(ca.ca_file)))
        back = Address("127.0.0.1", client.tls_address.port)
        server.set_tls_client(back, client_context(str(ca.ca_file)))
        client.send_request(_request(client.tls_address.port), target, TransportKind.TLS)
        request, source = await server_inbox.next()
        assert isinstance(request, Request)
        client.close_connections_to(target)
        await asyncio.sleep(0.2)
        server.send_response(make_response(request, 202), source)
        response, via = await client_inbox.next()
        assert isinstance(response, Response)
        assert response.status == 202
        assert via.kind is TransportKind.TLS


def test_bad_files_are_refused_with_a_reason(tmp_path: Path, server_files: ServerFiles) -> None:
    with pytest.raises(TlsSetupError, match="no such file"):
        client_context(str(tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(TlsSetupError, match="holds no"):
        client_context(str(tmp_path / "junk.pem"))
    with pytest.raises(TlsSetupError, match="directory"):
        client_context(str(tmp_path))
    with pytest.raises(TlsSetupError, match="cannot be used"):
        server_context(str(server_files.certificate), str(tmp_path / "junk.pem"))
    other = TestCa.create(tmp_path / "x", "x CA").issue(tmp_path / "x", stem="x")
    with pytest.raises(TlsSetupError, match="cannot be used"):  # a key that is not the cert's
        server_context(str(server_files.certificate), str(other.key))


def test_failure_reasons_are_one_line() -> None:
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] x (_ssl.c:1000)")
    error.verify_message = "unable to get local issuer certificate"
    assert failure_reason(error) == (
        "certificate verify failed: unable to get local issuer certificate"
    )
    assert failure_reason(OSError("refused")) == "refused"


async def test_a_ping_keeps_an_open_connection_alive_and_opens_none(
    ca: TestCa, server_files: ServerFiles
) -> None:
    """CRLF keep-alive (RFC 5626 §3.5.1) on the connection to a destination: written when one
    is open, nothing done when none is."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.put_nowait(data)
        writer.close()

    server = await asyncio.start_server(
        serve,
        "127.0.0.1",
        0,
        ssl=server_context(str(server_files.certificate), str(server_files.key)),
    )
    port = server.sockets[0].getsockname()[1]
    target = Address("127.0.0.1", port)
    try:
        async with layer(Inbox()) as client:
            assert client.ping(target, TransportKind.TLS) is False
            assert client.connection_count == 0
            client.set_tls_client(target, client_context(str(ca.ca_file)))
            client.send_request(_request(client.local_address.port), target, TransportKind.TLS)
            first = await asyncio.wait_for(received.get(), WAIT)
            assert first.startswith(b"OPTIONS ")
            assert client.ping(target, TransportKind.TCP) is False  # not that kind
            assert client.ping(target, TransportKind.TLS) is True
            assert await asyncio.wait_for(received.get(), WAIT) == b"\r\n\r\n"
            assert client.connection_count == 1
    finally:
        server.close()
        await server.wait_closed()
