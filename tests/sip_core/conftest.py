"""Fixtures shared by the sip_core tests."""

from __future__ import annotations

import pytest

from sip_core.media.fastpath import ENVIRONMENT_SWITCH, FastPathState, load_fast_path

COMPILED = load_fast_path()[1] is FastPathState.COMPILED


@pytest.fixture(
    params=[
        "python",
        pytest.param(
            "compiled",
            marks=pytest.mark.skipif(not COMPILED, reason="the compiled packet path is not built"),
        ),
    ]
)
def packet_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test against media engines forwarding in pure Python, then in compiled code.

    The engine child inherits the environment, where `CALLFLIP_MEDIA_FASTPATH=0` leaves the
    compiled packet path out."""
    if request.param == "python":
        monkeypatch.setenv(ENVIRONMENT_SWITCH, "0")
    else:
        monkeypatch.delenv(ENVIRONMENT_SWITCH, raising=False)
    return str(request.param)
