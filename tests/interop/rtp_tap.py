"""A packet capture on the loopback interface for RTP, in the test process (no tcpdump needed).

An ``AF_PACKET`` socket on ``lo`` sees every IPv4 datagram on loopback with the kernel's receive
timestamp (``SO_TIMESTAMPNS``), so a test can tell when each RTP packet reached a client's port
without trusting the client's recording (a recorder writes decoded frames as they come: a stretch
with no packets leaves no trace in it). Needs CAP_NET_RAW; ``RtpTap.available()`` says whether the
socket can be opened.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

_ETH_P_IP = 0x0800
_PACKET_HOST = 0  # the looped-back copy; the sender's copy is PACKET_OUTGOING
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_ETH_HEADER = 14


@dataclass(frozen=True, slots=True)
class RtpPacket:
    arrival: float  # seconds, the kernel's clock (CLOCK_REALTIME)
    payload_type: int
    sequence: int
    samples: NDArray[np.float64]  # decoded G.711, -1..1


def _ulaw(data: bytes) -> NDArray[np.float64]:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.float64) / 32768.0


def _alaw(data: bytes) -> NDArray[np.float64]:
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.float64) / 32768.0


class RtpTap:
    """Captures the RTP (PCMU/PCMA) sent to one UDP port on 127.0.0.1 until `stop`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.packets: list[RtpPacket] = []
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_IP))
        self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def available() -> bool:
        try:
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_IP)).close()
        except (OSError, AttributeError):
            return False
        return True

    def stop(self) -> list[RtpPacket]:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        return self.packets

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _flags, address = self._sock.recvmsg(2048, 256)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] != _PACKET_HOST:
                continue
            arrival = None
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    seconds, nanoseconds = struct.unpack("qq", value[:16])
                    arrival = seconds + nanoseconds / 1e9
            with contextlib.suppress(IndexError, struct.error):
                packet = self._parse(data[_ETH_HEADER:], arrival)
                if packet is not None:
                    self.packets.append(packet)

    def _parse(self, ip: bytes, arrival: float | None) -> RtpPacket | None:
        if arrival is None or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
            return None
        udp = ip[(ip[0] & 0x0F) * 4 :]
        if struct.unpack("!H", udp[2:4])[0] != self.port:
            return None
        rtp = udp[8:]
        if rtp[0] >> 6 != 2:
            return None
        payload_type = rtp[1] & 0x7F
        header = 12 + 4 * (rtp[0] & 0x0F)
        if rtp[0] & 0x10:  # a header extension
            header += 4 + 4 * struct.unpack("!H", rtp[header + 2 : header + 4])[0]
        payload = rtp[header:]
        if payload_type == 0:
            samples = _ulaw(payload)
        elif payload_type == 8:
            samples = _alaw(payload)
        else:
            return None  # telephone-events, comfort noise: no audio
        sequence = struct.unpack("!H", rtp[2:4])[0]
        return RtpPacket(arrival, payload_type, sequence, samples)
