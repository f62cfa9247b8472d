"""A fast subset of bench/fuzz: 20,000 generated inputs against the runner, over UDP and TCP.

Mutated requests and responses, random bytes, and INVITEs with a valid digest and mutated SDP
(`bench/_fuzzgen.py`, a fixed seed per run of the suite): the runner logs no error and no
traceback, still registers and connects a call afterwards, and has nothing left open. The
million-input run is ``bench/fuzz`` (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("seed", [1])
async def test_fuzzed_runner_logs_no_error_and_still_serves(seed: int) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "bench" / "fuzz"),
        "--count", "20000", "--seed", str(seed), "--json", "--no-docs",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    async with asyncio.timeout(240):
        out, err = await process.communicate()
    assert out, err.decode(errors="replace")[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    details = "\n".join([*result["first_errors"], *result["traceback_lines"]])
    assert result["error_lines"] == 0, details
    assert result["tracebacks"] == 0, details
    assert result["inputs"] == 20000
    assert set(result["kinds"]) >= {"udp mutated", "udp random", "udp sdp", "tcp framed"}
    # The SDP inputs were read: unreadable SDP (488) and readable SDP to nobody registered (480).
    assert result["udp_statuses"].get("488", 0) > 0
    assert result["udp_statuses"].get("480", 0) > 0
    assert result["pacing_probes_unanswered"] == 0
    assert result["runner_alive"]
    assert result["after"]["register"] == [200, 200]
    assert result["after"]["bye"] == 200
    assert result["after"]["caller_heard_packets"] > 0
    assert result["leaks"] == {}
    assert result["exit_status"] == 0
    assert process.returncode == 0
