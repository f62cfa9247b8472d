"""Network namespaces with a lossy, reordering or duplicating path, for bench/loss.

Linux's ``netem`` qdisc is not available everywhere (some kernels are built without it), so:

- loss: a veth pair between two namespaces and an nftables table in one of them that drops a
  share of the packets in each direction (``numgen random mod 100 < N``);
- reordering and duplication: a third namespace in the middle with two veth pairs and no kernel
  forwarding between them; `bridge` (run there as ``python bench/_netem.py bridge A B ...``)
  copies every frame from one interface to the other in user space (AF_PACKET), holding each for
  a random time (so later packets overtake earlier ones) and sending some twice (IPv4 UDP frames
  go on with their checksum cleared, see `without_udp_checksum`).

Everything is created under unique names and removed again by `Path.close`.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import os
import random
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


class NetnsUnavailable(Exception):
    """Network namespaces (or nftables) cannot be used here; the message says why."""


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetnsUnavailable(f"{' '.join(argv)}: {result.stderr.strip()}")


def why_unavailable() -> str | None:
    """None when namespaces, veth pairs and nftables can be used, else the reason."""
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if subprocess.run(["which", "nft"], capture_output=True, check=False).returncode != 0:
        return "nft (Debian package nftables) is not installed"
    probe = f"cfprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (NetnsUnavailable, FileNotFoundError) as err:
        return f"cannot create a network namespace: {err}"
    try:
        _ip("link", "add", "pa", "type", "veth", "peer", "name", "pb", netns=probe)
    except NetnsUnavailable as err:
        return f"cannot create a veth pair: {err}"
    finally:
        with contextlib.suppress(NetnsUnavailable):
            _ip("netns", "del", probe)
    return None


@dataclass
class Path:
    """The PBX's namespace and the phones' namespace, joined directly or through a bridge."""

    pbx_ns: str
    phones_ns: str
    pbx_address: str
    phones_address: str
    middle_ns: str | None = None
    bridge: subprocess.Popen[bytes] | None = None
    created: list[str] = field(default_factory=list)

    @classmethod
    def create(
        cls, *, loss_percent: int = 0, reorder_ms: float = 0.0, duplicate: float = 0.0
    ) -> Path:
        tag = f"{os.getpid() % 100000}{random.randrange(100)}"
        subnet = f"10.{random.randrange(64, 128)}.{random.randrange(256)}"
        path = cls(f"cfpbx{tag}", f"cfph{tag}", f"{subnet}.1", f"{subnet}.2")
        try:
            path._build(tag, loss_percent, reorder_ms, duplicate)
        except BaseException:
            path.close()
            raise
        return path

    def _build(self, tag: str, loss_percent: int, reorder_ms: float, duplicate: float) -> None:
        for name in (self.pbx_ns, self.phones_ns):
            _ip("netns", "add", name)
            self.created.append(name)
            _ip("link", "set", "dev", "lo", "up", netns=name)
        if reorder_ms or duplicate:
            self.middle_ns = f"cfmid{tag}"
            _ip("netns", "add", self.middle_ns)
            self.created.append(self.middle_ns)
            _ip("link", "set", "dev", "lo", "up", netns=self.middle_ns)
            self._veth(self.pbx_ns, "eth0", self.middle_ns, "ma")
            self._veth(self.phones_ns, "eth0", self.middle_ns, "mb")
            for name in ("ma", "mb"):
                _ip("link", "set", "dev", name, "promisc", "on", netns=self.middle_ns)
            argv = [
                "ip", "netns", "exec", self.middle_ns, sys.executable, __file__, "bridge",
                "ma", "mb", "--reorder-ms", str(reorder_ms), "--duplicate", str(duplicate),
            ]  # fmt: skip
            self.bridge = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
            time.sleep(0.3)
            if self.bridge.poll() is not None:
                raise NetnsUnavailable("the user-space bridge did not start")
        else:
            self._veth(self.pbx_ns, "eth0", self.phones_ns, "eth0")
        _ip("addr", "add", f"{self.pbx_address}/24", "dev", "eth0", netns=self.pbx_ns)
        _ip("addr", "add", f"{self.phones_address}/24", "dev", "eth0", netns=self.phones_ns)
        for name in (self.pbx_ns, self.phones_ns):
            _ip("link", "set", "dev", "eth0", "up", netns=name)
        if loss_percent:
            self._drop(loss_percent)

    def _veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        _ip(
            "link",
            "add",
            name_a,
            "netns",
            ns_a,
            "type",
            "veth",
            "peer",
            "name",
            name_b,
            "netns",
            ns_b,
        )
        if ns_b == self.middle_ns:
            _ip("link", "set", "dev", name_b, "up", netns=ns_b)

    def _drop(self, percent: int) -> None:
        """Drop ``percent`` % of the packets arriving in each namespace (both directions).

        On the input hook: a drop there is silent, as a lost packet is (dropped on output, the
        sender's ``send`` would fail with EPERM and it would know)."""
        rules = (
            "table inet callflip_loss {\n"
            "  chain incoming {\n"
            "    type filter hook input priority 0; policy accept;\n"
            f'    iifname "eth0" numgen random mod 100 < {percent} counter drop\n'
            "  }\n"
            "}\n"
        )
        for name in (self.pbx_ns, self.phones_ns):
            result = subprocess.run(
                ["ip", "netns", "exec", name, "nft", "-f", "-"],
                input=rules, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise NetnsUnavailable(f"nft: {result.stderr.strip()}")

    def dropped(self) -> dict[str, int]:
        """Packets the loss rules dropped so far: towards the PBX, towards the phones."""
        counts = {}
        for label, name in (("to the PBX", self.pbx_ns), ("to the phones", self.phones_ns)):
            result = subprocess.run(
                ["ip", "netns", "exec", name, "nft", "list", "table", "inet", "callflip_loss"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            for line in result.stdout.splitlines():
                if "counter packets" in line:
                    counts[label] = int(line.split("counter packets")[1].split()[0])
        return counts

    def enter_phones(self) -> None:
        """Move this thread (and the threads it starts) into the phones' namespace."""
        with open(f"/var/run/netns/{self.phones_ns}", "rb") as handle:
            os.setns(handle.fileno(), os.CLONE_NEWNET)

    def close(self) -> None:
        if self.bridge is not None:
            self.bridge.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.bridge.wait(5)
            if self.bridge.poll() is None:
                self.bridge.kill()
            self.bridge = None
        for name in reversed(self.created):
            with contextlib.suppress(NetnsUnavailable):
                _ip("netns", "del", name)
        self.created.clear()


def without_udp_checksum(frame: bytes) -> bytes:
    """An IPv4 UDP frame with its checksum set to 0 ("none", RFC 768).

    A veth hands packet sockets its frames before the checksum is filled in (the kernel leaves
    it to the "hardware"); sent on as they are, the receiver would drop them as corrupt.
    """
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return frame
    offset = 14 + 4 * (frame[14] & 0x0F) + 6
    return frame[:offset] + b"\x00\x00" + frame[offset + 2 :]


def bridge(side_a: str, side_b: str, reorder_ms: float, duplicate: float) -> None:
    """Copy frames between two interfaces, each held 0..reorder_ms ms, a share sent twice."""
    sockets = {}
    for name in (side_a, side_b):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((name, 0))
        sock.setblocking(False)
        sockets[name] = sock
    other = {side_a: sockets[side_b], side_b: sockets[side_a]}
    by_fd = {sock.fileno(): name for name, sock in sockets.items()}
    poller = select.epoll()
    for sock in sockets.values():
        poller.register(sock.fileno(), select.EPOLLIN)
    queue: list[tuple[float, int, socket.socket, bytes]] = []
    serial = 0
    rng = random.Random()
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 1.0
        for fd, _ in poller.poll(timeout):
            name = by_fd[fd]
            while True:
                try:
                    frame, address = sockets[name].recvfrom(65535)
                except BlockingIOError:
                    break
                if address[2] == PACKET_OUTGOING:
                    continue
                frame = without_udp_checksum(frame)
                copies = 2 if rng.random() < duplicate else 1
                for _ in range(copies):
                    serial += 1
                    due = time.monotonic() + rng.uniform(0, reorder_ms) / 1000
                    heapq.heappush(queue, (due, serial, other[name], frame))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, sock, frame = heapq.heappop(queue)
            with contextlib.suppress(OSError):
                sock.send(frame)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("bridge")
    run.add_argument("side_a")
    run.add_argument("side_b")
    run.add_argument("--reorder-ms", type=float, default=0.0)
    run.add_argument("--duplicate", type=float, default=0.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        bridge(args.side_a, args.side_b, args.reorder_ms, args.duplicate)


if __name__ == "__main__":
    main()
