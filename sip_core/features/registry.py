"""The features' side of call control's hooks: one table of feature codes, one place per hook.

Why a registry: call control offers one hook of each kind (`sip_core.call.control.CallHooks`);
several features share them. Each feature adds its code here with the handler for a match; the
registry builds the feature-code collector for a leg from every code (read from the configuration
when the leg's first digit comes, so a changed code applies to the next call) and sends each match
to its feature. A feature operation may take a leg's keys before any code is looked for (an
attended transfer's consultation reads its completion and cancel codes from them, whether they
come as RFC 4733 events or SIP INFO): `add_digit_taker`. In-dialog requests (REFER) and INVITEs
with Replaces go to the features that added a handler for them; what no feature answers (a code
dialled from idle, NOTIFY in a call) returns False, so call control answers as it always did: 404,
405, and a Replaces header ignored.
"""

from __future__ import annotations

from collections.abc import Callable

from sip_core.call.control import CallControl
from sip_core.calls import Leg
from sip_core.features.codes import FeatureCode, FeatureCodeCollector, FeatureMatch
from sip_core.message import Request
from sip_core.transaction import ServerTransaction
from sip_core.transport import Source

__all__ = ["CodeHandler", "DigitTaker", "FeatureRegistry", "InCallHandler", "ReplacesHandler"]

#: What a feature does when its code is dialled on a leg.
CodeHandler = Callable[[Leg, FeatureMatch], None]
#: A feature's answer to an in-dialog request call control does not implement (True: handled).
InCallHandler = Callable[[Leg, Request, ServerTransaction], bool]
#: A feature's answer to an INVITE with Replaces (True: handled).
ReplacesHandler = Callable[[Request, ServerTransaction, Source], bool]
#: A feature that takes a key pressed on a leg before the codes see it (True: taken).
DigitTaker = Callable[[Leg, str], bool]


class _LegDigits:
    """A leg's digit sink: the takers first (an operation under way), then the code collector."""

    def __init__(
        self,
        leg: Leg,
        takers: list[DigitTaker],
        collector: FeatureCodeCollector | None,
        pass_on: Callable[[str], None],
    ) -> None:
        self._leg = leg
        self._takers = takers
        self._collector = collector
        self._pass_on = pass_on

    def feed(self, digit: str) -> None:
        if any(take(self._leg, digit) for take in self._takers):
            return
        if self._collector is None:
            self._pass_on(digit)
        else:
            self._collector.feed(digit)

    def close(self) -> None:
        if self._collector is not None:
            self._collector.close()


class FeatureRegistry:
    """Installs itself as ``control``'s hooks; features add their codes with `add_code`."""

    def __init__(self, control: CallControl) -> None:
        self._control = control
        self._codes: list[tuple[Callable[[], FeatureCode], CodeHandler]] = []
        self._in_call: list[InCallHandler] = []
        self._replaces: list[ReplacesHandler] = []
        self._takers: list[DigitTaker] = []
        hooks = control.hooks
        hooks.digit_sink = self._collector
        hooks.dialled_code = self._dialled_code
        hooks.in_call_request = self._in_call_request
        hooks.invite_replaces = self._invite_replaces
        hooks.is_code = self._is_code

    def add_code(self, code: Callable[[], FeatureCode], handler: CodeHandler) -> None:
        """``code()`` gives the feature's code as configured now; ``handler`` runs on a match."""
        self._codes.append((code, handler))

    def add_digit_taker(self, taker: DigitTaker) -> None:
        """``taker`` sees every key of every answered leg before the feature codes do; a key it
        takes (True) goes nowhere else."""
        self._takers.append(taker)

    def add_in_call(self, handler: InCallHandler) -> None:
        """``handler`` is asked about in-dialog requests call control does not implement (REFER,
        NOTIFY), in the order added; the first to return True has answered."""
        self._in_call.append(handler)

    def add_replaces(self, handler: ReplacesHandler) -> None:
        """``handler`` is asked about INVITEs with a Replaces header, in the order added."""
        self._replaces.append(handler)

    def _collector(self, leg: Leg, pass_on: Callable[[str], None]) -> _LegDigits | None:
        collector = self._codes_collector(leg, pass_on)
        if collector is None and not self._takers:
            return None
        return _LegDigits(leg, self._takers, collector, pass_on)

    def _codes_collector(
        self, leg: Leg, pass_on: Callable[[str], None]
    ) -> FeatureCodeCollector | None:
        if not self._codes:
            return None
        handlers: dict[str, CodeHandler] = {}
        codes: list[FeatureCode] = []
        for make, handler in self._codes:
            code = make()
            codes.append(code)
            handlers[code.name] = handler

        def matched(match: FeatureMatch) -> None:
            handler = handlers.get(match.name)
            if handler is not None:
                handler(leg, match)

        return FeatureCodeCollector(self._control.clock, matched, pass_on, tuple(codes))

    def _is_code(self, dialled: str) -> bool:
        """Whether ``dialled`` is one of the codes as configured now (never sent out)."""
        return any(make().code == dialled for make, _handler in self._codes)

    def _dialled_code(
        self, request: Request, txn: ServerTransaction, caller_device: str, dialled: str
    ) -> bool:
        """No feature is dialled from idle yet: the number stays unknown (404)."""
        return False

    def _in_call_request(self, leg: Leg, request: Request, txn: ServerTransaction) -> bool:
        """The features that take in-dialog requests (REFER); none: 405, as before."""
        return any(handler(leg, request, txn) for handler in self._in_call)

    def _invite_replaces(self, request: Request, txn: ServerTransaction, source: Source) -> bool:
        """The features that take INVITE with Replaces; none: the header is ignored."""
        return any(handler(request, txn, source) for handler in self._replaces)
