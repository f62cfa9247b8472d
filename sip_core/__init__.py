"""callflip's SIP stack: a small, standards-correct PBX on asyncio (PyYAML its one dependency)."""

__version__ = "0.1.0"
