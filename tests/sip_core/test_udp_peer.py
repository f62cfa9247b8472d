"""Tying a UDP socket to one peer and untying it (sip_core.media.udp_peer), on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from sip_core.media.udp_peer import can_disconnect, disconnect

HOST = "127.0.0.1"


def _socket() -> socket.socket:
    """A socket bound to an explicit port, as the relay binds them (an untied socket keeps it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as scratch:
        scratch.bind((HOST, 0))
        address = scratch.getsockname()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5.0)
    return sock


def test_an_untied_socket_takes_datagrams_from_anyone_again() -> None:
    assert can_disconnect()  # Linux: connect(2) with AF_UNSPEC unties
    sock, peer, other = _socket(), _socket(), _socket()
    try:
        sock.connect(peer.getsockname())
        other.sendto(b"refused", sock.getsockname())  # not the peer: the kernel drops it
        peer.sendto(b"from the peer", sock.getsockname())
        assert sock.recv(64) == b"from the peer"
        bound = sock.getsockname()
        disconnect(sock)
        with pytest.raises(OSError, match="not connected"):
            sock.getpeername()
        assert sock.getsockname() == bound
        other.sendto(b"welcome", sock.getsockname())
        assert sock.recvfrom(64) == (b"welcome", other.getsockname())
        disconnect(sock)  # untying an untied socket changes nothing
        sock.connect(other.getsockname())  # and it can be tied again
        assert sock.getpeername() == other.getsockname()
    finally:
        for s in (sock, peer, other):
            s.close()


def test_untying_a_closed_socket_is_an_oserror() -> None:
    sock = _socket()
    sock.close()
    with pytest.raises(OSError, match="cannot disconnect"):
        disconnect(sock)
