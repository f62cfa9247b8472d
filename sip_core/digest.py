"""Server-side HTTP Digest authentication for SIP (RFC 7616, RFC 8760, RFC 3261 §22)."""

from __future__ import annotations

from enum import StrEnum


class DigestAlgorithm(StrEnum):
    """The digest algorithms callflip offers, spelled as they appear on the wire."""

    MD5 = "MD5"
    SHA256 = "SHA-256"
