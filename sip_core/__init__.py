"""callflip's SIP stack: a small, standards-correct PBX on asyncio with no runtime dependencies."""

__version__ = "0.1.0"
