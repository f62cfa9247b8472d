"""Inputs for bench/fuzz: mutations of valid SIP messages, random bytes, and mutated SDP offers.

`Generator` is seeded, so a run can be repeated input for input (``--seed``). Every input is one
datagram (or one write on a TCP connection). Kinds:

- ``mutated``: a valid request or response (REGISTER, INVITE with SDP, OPTIONS, BYE, ACK, CANCEL,
  INFO, SUBSCRIBE, MESSAGE, a 200 or 180 as if from a phone) with one to four mutations: bit
  flips, bytes inserted, deleted, duplicated or truncated, a number swapped for an extreme one
  (negative, 2**64, 0, huge Content-Length), a header line duplicated or dropped, line endings
  changed, NUL and non-UTF-8 bytes, a header value replaced with a tricky one.
- On TCP, most mutated messages get a Content-Length that matches their body again (`framed`),
  so that each is read as one message and the stream goes on; the others (and random bytes) end
  their connection, and the next input starts a new one.
- ``random``: 0 to 1,500 random bytes, sometimes starting with a method or ``SIP/2.0``.
- ``sdp``: an INVITE whose digest answer is right (the generator is given a challenge and counts
  ``nc`` up), dialling a device that exists but is not registered, so the PBX reads the SDP body --
  mutated line by line and byte by byte -- before answering 488 or 480; no call is created.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

TRICKY = [
    b"",
    b" ",
    b"\t",
    b"<>",
    b"<sip:>",
    b"sip:@",
    b"sip:a@[::1",
    b"sip:a@1.2.3.4:99999",
    b"sips:a@b;transport=xyz",
    b"tel:+1-555",
    b'"unterminated',
    b"\\",
    b"a" * 300,
    b";;;;;",
    b"===",
    b",,,",
    b"-1",
    b"0",
    b"4294967296",
    b"18446744073709551616",
    b"99999999999999999999999999",
    b"1.5",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\x00",
    b"%00%ff",
    b"Digest",
    b'Digest realm="x", nonce="y", response="z", username="201", uri="sip:x"',
    b"SIP/2.0/UDP",
    b"SIP/2.0/UDP 1.2.3.4;branch=",
    b"SIP/2.0/TLS [::1]:5061;branch=z9hG4bK;rport=x",
    b"application/sdp",
    b"multipart/mixed;boundary=x",
]
EXTREME_NUMBERS = [b"0", b"-1", b"65536", b"4294967296", b"18446744073709551616", b"9" * 40, b"00"]
HEADERS = [
    b"Via",
    b"From",
    b"To",
    b"Call-ID",
    b"CSeq",
    b"Contact",
    b"Max-Forwards",
    b"Content-Length",
    b"Content-Type",
    b"Expires",
    b"Route",
    b"Record-Route",
    b"Require",
    b"Proxy-Require",
    b"Supported",
    b"Authorization",
    b"Proxy-Authorization",
    b"Session-Expires",
    b"Min-SE",
    b"Accept",
    b"Event",
    b"i",
    b"v",
    b"l",
    b"m",
    b"f",
    b"t",
    b"X-\xff",
]


@dataclass(slots=True)
class Challenge:
    realm: str
    nonce: str
    opaque: str | None
    username: str
    password: str


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def sdp(host: str, port: int) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
    ).encode()


class Generator:
    """Seeded inputs for one fuzzing client at ``host:port`` against the PBX at ``target``."""

    def __init__(self, seed: int, host: str, port: int, target: str, domain: str) -> None:
        self.rng = random.Random(seed)
        self.host, self.port, self.target, self.domain = host, port, target, domain
        self.challenge: Challenge | None = None
        self._nc = 0
        self._serial = 0

    # -- valid messages ------------------------------------------------------------------------

    def _common(self, method: str, cseq: int, to_tag: bool = False) -> list[str]:
        self._serial += 1
        n = self._serial
        tag = ";tag=tt" + str(n) if to_tag else ""
        return [
            f"Via: SIP/2.0/UDP {self.host}:{self.port};"
            f"branch=z9hG4bKfz{n}x{self.rng.randrange(1 << 30)};rport",
            "Max-Forwards: 70",
            f"From: <sip:201@{self.domain}>;tag=ft{n}",
            f"To: <sip:202@{self.domain}>{tag}",
            f"Call-ID: fuzz-{n}@{self.host}",
            f"CSeq: {cseq} {method}",
        ]

    def valid(self) -> bytes:
        rng = self.rng
        choice = rng.randrange(11)
        uri = f"sip:202@{self.domain}"
        body = b""
        if choice == 0:
            lines = [f"REGISTER sip:{self.domain} SIP/2.0", *self._common("REGISTER", 1)]
            lines[3] = f"To: <sip:201@{self.domain}>"
            lines += [f"Contact: <sip:201@{self.host}:{self.port}>;expires=60", "Expires: 60"]
        elif choice in (1, 2):
            body = sdp(self.host, 4000 + 2 * rng.randrange(100))
            lines = [f"INVITE {uri} SIP/2.0", *self._common("INVITE", 1)]
            lines += [
                f"Contact: <sip:201@{self.host}:{self.port}>",
                "Content-Type: application/sdp",
            ]
            if rng.random() < 0.3:
                lines.append("Session-Expires: 90;refresher=uac")
        elif choice == 3:
            lines = [
                f"OPTIONS {uri} SIP/2.0",
                *self._common("OPTIONS", 1),
                "Accept: application/sdp",
            ]
        elif choice == 4:
            lines = [f"BYE {uri} SIP/2.0", *self._common("BYE", 2, to_tag=True)]
        elif choice == 5:
            lines = [f"ACK {uri} SIP/2.0", *self._common("ACK", 1, to_tag=True)]
        elif choice == 6:
            lines = [f"CANCEL {uri} SIP/2.0", *self._common("CANCEL", 1)]
        elif choice == 7:
            body = b"Signal=5\r\nDuration=160\r\n"
            lines = [f"INFO {uri} SIP/2.0", *self._common("INFO", 3, to_tag=True)]
            lines.append("Content-Type: application/dtmf-relay")
        elif choice == 8:
            lines = [f"SUBSCRIBE {uri} SIP/2.0", *self._common("SUBSCRIBE", 1)]
            lines += ["Event: presence", "Expires: 600", f"Contact: <sip:201@{self.host}>"]
        elif choice == 9:
            body = b"hello"
            lines = [f"MESSAGE {uri} SIP/2.0", *self._common("MESSAGE", 1)]
            lines.append("Content-Type: text/plain")
        else:
            status = rng.choice(["200 OK", "180 Ringing", "486 Busy Here", "100 Trying"])
            lines = [f"SIP/2.0 {status}", *self._common(rng.choice(["INVITE", "BYE"]), 1, True)]
            if status.startswith("200"):
                body = sdp(self.host, 5000)
                lines += [
                    f"Contact: <sip:202@{self.host}:{self.port}>",
                    "Content-Type: application/sdp",
                ]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    # -- mutations -----------------------------------------------------------------------------

    def mutate(self, data: bytes, rounds: int | None = None) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        for _ in range(rounds if rounds is not None else rng.randint(1, 4)):
            op = rng.randrange(12)
            size = len(buf)
            at = rng.randrange(size + 1)
            if op == 0 and size:  # bit flips
                for _ in range(rng.randint(1, 8)):
                    i = rng.randrange(size)
                    buf[i] ^= 1 << rng.randrange(8)
            elif op == 1:  # insert random bytes
                buf[at:at] = rng.randbytes(rng.randint(1, 32))
            elif op == 2 and size:  # delete a range
                buf[at : at + rng.randint(1, 64)] = b""
            elif op == 3 and size:  # duplicate a range
                end = min(size, at + rng.randint(1, 200))
                buf[at:at] = buf[at:end] * rng.randint(1, 5)
            elif op == 4:  # truncate
                del buf[at:]
            elif op == 5:  # an extreme number for the first number after a random point
                digits = [i for i in range(at, size) if 48 <= buf[i] <= 57]
                if digits:
                    i = digits[0]
                    j = i
                    while j < size and 48 <= buf[j] <= 57:
                        j += 1
                    buf[i:j] = rng.choice(EXTREME_NUMBERS)
            elif op == 6:  # duplicate or drop a header line
                lines = bytes(buf).split(b"\r\n")
                if len(lines) > 2:
                    i = rng.randrange(1, len(lines))
                    if rng.random() < 0.5:
                        lines.insert(i, lines[i])
                    else:
                        del lines[i]
                    buf = bytearray(b"\r\n".join(lines))
            elif op == 7:  # line endings
                old, new = rng.choice([(b"\r\n", b"\n"), (b"\r\n", b"\r"), (b"\r\n", b"\r\n ")])
                buf = bytearray(bytes(buf).replace(old, new, rng.randint(1, 20)))
            elif op == 8:  # a header value replaced with a tricky one
                lines = bytes(buf).split(b"\r\n")
                if len(lines) > 2:
                    i = rng.randrange(1, len(lines))
                    name = lines[i].split(b":", 1)[0] if b":" in lines[i] else rng.choice(HEADERS)
                    lines[i] = name + b": " + rng.choice(TRICKY)
                    buf = bytearray(b"\r\n".join(lines))
            elif op == 9:  # a new header with a tricky value
                lines = bytes(buf).split(b"\r\n")
                lines.insert(
                    rng.randint(1, max(1, len(lines) - 1)),
                    rng.choice(HEADERS) + b": " + rng.choice(TRICKY),
                )
                buf = bytearray(b"\r\n".join(lines))
            elif op == 10:  # NUL or non-UTF-8 bytes
                buf[at:at] = rng.choice([b"\x00", b"\xff", b"\xc3", b"\xe2\x82", b"\x80" * 3])
            else:  # a long run of one character
                buf[at:at] = bytes([rng.randrange(256)]) * rng.randint(100, 4000)
        return bytes(buf)

    @staticmethod
    def framed(data: bytes) -> bytes | None:
        """``data`` with a Content-Length that matches its body, so that on a TCP stream it is
        one message whatever the mutations did; None when it has no header/body boundary."""
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            return None
        lines = [
            line
            for line in head.split(b"\r\n")
            if not line.lower().startswith((b"content-length", b"l:", b"l :"))
        ]
        lines.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(lines) + sep + body

    def random_bytes(self) -> bytes:
        rng = self.rng
        data = rng.randbytes(rng.randint(0, 1500))
        if rng.random() < 0.5:
            head = rng.choice(
                [b"INVITE ", b"REGISTER sip:", b"SIP/2.0 ", b"OPTIONS sip:x SIP/2.0\r\n"]
            )
            data = head + data
        return data

    # -- SDP behind a valid digest -------------------------------------------------------------

    def _sdp_body(self) -> bytes:
        rng = self.rng
        lines = sdp(self.host, 4000 + 2 * rng.randrange(1000)).split(b"\r\n")
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(7)
            if not lines:
                lines = [b""]
            i = rng.randrange(len(lines))
            if op == 0:
                lines[i] = lines[i][:2] + rng.choice(TRICKY)
            elif op == 1:
                lines.insert(
                    i,
                    rng.choice([b"m=", b"c=", b"a=", b"o=", b"v=", b"t=", b"b="])
                    + rng.choice(TRICKY),
                )
            elif op == 2:
                lines.insert(
                    i,
                    b"m=audio "
                    + rng.choice(EXTREME_NUMBERS)
                    + b" RTP/AVP "
                    + rng.choice(EXTREME_NUMBERS),
                )
            elif op == 3:
                lines.insert(
                    i, b"a=rtpmap:" + rng.choice(EXTREME_NUMBERS) + b" " + rng.choice(TRICKY)
                )
            elif op == 4:
                lines.insert(
                    i,
                    rng.choice(
                        [
                            b"m=video 0 RTP/AVP 96",
                            b"m=audio 4000 RTP/SAVP 0",
                            b"c=IN IP6 ::1",
                            b"c=IN IP4 0.0.0.0",
                            b"a=inactive",
                            b"a=sendonly",
                        ]
                    )
                    * rng.randint(1, 30),
                )
            elif op == 5:
                del lines[i]
            else:
                lines = self.mutate(b"\r\n".join(lines), 1).split(b"\r\n")
        return b"\r\n".join(lines)

    def sdp_invite(self, callee: str) -> bytes:
        challenge = self.challenge
        assert challenge is not None
        uri = f"sip:{callee}@{self.domain}"
        self._nc += 1
        nc = f"{self._nc:08x}"
        cnonce = f"{self.rng.randrange(1 << 40):x}"
        ha1 = _md5(f"{challenge.username}:{challenge.realm}:{challenge.password}")
        ha2 = _md5(f"INVITE:{uri}")
        response = _md5(f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:auth:{ha2}")
        auth = (
            f'Digest username="{challenge.username}", realm="{challenge.realm}", '
            f'nonce="{challenge.nonce}", uri="{uri}", algorithm=MD5, qop=auth, nc={nc}, '
            f'cnonce="{cnonce}", response="{response}"'
        )
        if challenge.opaque:
            auth += f', opaque="{challenge.opaque}"'
        body = self._sdp_body()
        lines = [f"INVITE {uri} SIP/2.0", *self._common("INVITE", 1)]
        lines[4] = f"To: <{uri}>"
        lines[3] = f"From: <sip:{challenge.username}@{self.domain}>;tag=sdp{self._serial}"
        lines += [
            f"Contact: <sip:{challenge.username}@{self.host}:{self.port}>",
            "Content-Type: application/sdp",
            f"Proxy-Authorization: {auth}",
            f"Content-Length: {len(body)}",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
