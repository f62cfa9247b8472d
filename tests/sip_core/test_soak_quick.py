"""A short soak (bench/soak, ~20 s of calls): every call completes and nothing is left open.

The runner (``python -m sip_core``) gets steady calls from two lanes of phones, half with media
through the relay, a third flipped by ``*0``; afterwards its own counters (`Pbx.stats`, timers and
tasks included) and its sockets in /proc are back where they were before the first call. The
10-minute run is ``bench/soak`` (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


async def test_quick_soak_completes_every_call_and_leaks_nothing() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "bench" / "soak"),
        "--duration", "20", "--lanes", "2", "--hold", "2", "--json", "--no-docs",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    async with asyncio.timeout(240):
        out, err = await process.communicate()
    assert out, err.decode(errors="replace")[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["calls"] >= 4, result
    assert result["completed"] == result["calls"], result["failures"]
    assert result["flipped"] >= 1
    assert result["with_media"] >= 1
    assert result["leaks"] == {}, result["stats_end"]
    assert result["sockets_after"] == result["sockets_before"]
    assert result["tracebacks"] == 0
    assert result["stats_end"]["history"] == result["calls"]
    assert process.returncode == 0
