"""A short soak (bench/soak, a few warm-up calls then ~20 s of calls): every call completes and
nothing is left open.

The runner (``python -m sip_core``) gets steady calls from two lanes of phones, half with media
through the relay, a third flipped by ``*0``; afterwards its own counters (`Pbx.stats`, timers and
tasks included) and its sockets in /proc are back where they were before the first call, and the
resident memory of the runner and of its media engine was sampled over the window. The 10-minute
run is ``bench/soak`` (figures in docs/benchmarks.md).
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
        "--duration", "20", "--lanes", "2", "--hold", "2", "--warmup", "6",
        "--json", "--no-docs",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    async with asyncio.timeout(240):
        out, err = await process.communicate()
    assert out, err.decode(errors="replace")[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    warmup = result["warmup"]
    assert warmup["calls"] >= 6, warmup
    assert warmup["completed"] == warmup["calls"], warmup["failures"]
    assert warmup["history"] == warmup["calls"]
    assert result["calls"] >= 4, result
    assert result["completed"] == result["calls"], result["failures"]
    assert result["flipped"] >= 1
    assert result["with_media"] >= 1
    assert result["leaks"] == {}, result["stats_end"]
    assert result["sockets_after"] == result["sockets_before"]
    assert result["tracebacks"] == 0
    assert result["stats_end"]["history"] == warmup["calls"] + result["calls"]
    memory = result["memory"]
    for point in ("window_start", "window_end", "drained", "window_max"):
        assert memory[point]["runner"] > 0, memory
        assert memory[point]["engine"] > 0, memory  # the media engine ran the relayed calls
    assert memory["window_max"]["runner"] >= memory["window_start"]["runner"]
    assert memory["engine_processes"] == 1, memory  # never restarted
    assert len(memory["intervals"]) == 5
    assert memory["samples"] >= 4  # every 5 s over ~20 s, the start and the end
    assert process.returncode == 0
