"""The features' side of call control's hooks: one table of feature codes, one place per hook.

Why a registry: call control offers one hook of each kind (`sip_core.call.control.CallHooks`);
several features share them. Each feature adds its code here with the handler for a match; the
registry builds the feature-code collector for a leg from every code (read from the configuration
when the leg's first digit comes, so a changed code applies to the next call) and sends each match
to its feature. In-dialog requests (REFER) and INVITEs with Replaces go to the features that added
a handler for them; what no feature answers (a code dialled from idle, NOTIFY in a call) returns
False, so call control answers as it always did: 404, 405, and a Replaces header ignored.
"""

from __future__ import annotations

from collections.abc import Callable

from sip_core.call.control import CallControl
from sip_core.calls import Leg
from sip_core.features.codes import FeatureCode, FeatureCodeCollector, FeatureMatch
from sip_core.message import Request
from sip_core.transaction import ServerTransaction
from sip_core.transport import Source

__all__ = [
    "CodeHandler",
    "DialledHandler",
    "DigitTaker",
    "FeatureRegistry",
    "InCallHandler",
    "KeyHandler",
    "ReplacesHandler",
]

#: What a feature does when its code is dialled on a leg.
CodeHandler = Callable[[Leg, FeatureMatch], None]
#: A feature's answer to an in-dialog request call control does not implement (True: handled).
InCallHandler = Callable[[Leg, Request, ServerTransaction], bool]
#: A feature's answer to an INVITE with Replaces (True: handled).
ReplacesHandler = Callable[[Request, ServerTransaction, Source], bool]

#: A feature's answer to an INVITE for a number no device or user has (a code dialled from idle):
#: ``(request, txn, caller_device, dialled)``, True when it answered the INVITE.
DialledHandler = Callable[[Request, ServerTransaction, str, str], bool]


#: Where a leg's keys go while a feature reads them itself (`FeatureRegistry.capture`).
KeyHandler = Callable[[str], None]
#: A feature that takes a key pressed on a leg before the codes see it (True: taken).
DigitTaker = Callable[[Leg, str], bool]


class _LegKeys:
    """A leg's digit sink: its keys go to the feature capturing them (a menu), else to the
    digit takers (an operation under way), else to the code collector (made on the first key
    that needs it), else on to the far end."""

    __slots__ = ("_captures", "_collector", "_leg", "_make", "_pass_on", "_takers")

    def __init__(
        self,
        leg: Leg,
        captures: dict[Leg, KeyHandler],
        takers: list[DigitTaker],
        make: Callable[[], FeatureCodeCollector] | None,
        pass_on: Callable[[str], None],
    ) -> None:
        self._leg = leg
        self._captures = captures
        self._takers = takers
        self._make = make
        self._pass_on = pass_on
        self._collector: FeatureCodeCollector | None = None

    def feed(self, digit: str) -> None:
        handler = self._captures.get(self._leg)
        if handler is not None:
            handler(digit)
            return
        if any(take(self._leg, digit) for take in self._takers):
            return
        if self._make is None:
            self._pass_on(digit)
            return
        if self._collector is None:
            self._collector = self._make()
        self._collector.feed(digit)

    def close(self) -> None:
        self._captures.pop(self._leg, None)
        if self._collector is not None:
            self._collector.close()


class FeatureRegistry:
    """Installs itself as ``control``'s hooks; features add their codes with `add_code`."""

    def __init__(self, control: CallControl) -> None:
        self._control = control
        self._codes: list[tuple[Callable[[], FeatureCode], CodeHandler]] = []
        self._in_call: list[InCallHandler] = []
        self._replaces: list[ReplacesHandler] = []
        self._dialled: list[DialledHandler] = []
        self._captures: dict[Leg, KeyHandler] = {}
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
        """``taker`` sees every key of every answered leg (unless a menu captures it) before the
        feature codes do; a key it takes (True) goes nowhere else."""
        self._takers.append(taker)

    def add_in_call(self, handler: InCallHandler) -> None:
        """``handler`` is asked about in-dialog requests call control does not implement (REFER,
        NOTIFY), in the order added; the first to return True has answered."""
        self._in_call.append(handler)

    def add_replaces(self, handler: ReplacesHandler) -> None:
        """``handler`` is asked about INVITEs with a Replaces header, in the order added."""
        self._replaces.append(handler)

    def add_dialled(self, handler: DialledHandler) -> None:
        """``handler`` is asked, in the order added, about a number dialled from idle that is
        no device or user; the first that answers the INVITE (True) ends the search."""
        self._dialled.append(handler)

    def capture(self, leg: Leg, handler: KeyHandler) -> None:
        """Until `release`, every key ``leg``'s device presses goes to ``handler``, not to the
        feature codes nor the far end (a menu reading its choice, ``*0`` then ``2``)."""
        self._captures[leg] = handler

    def release(self, leg: Leg, handler: KeyHandler | None = None) -> None:
        """End `capture` on ``leg`` (only ``handler``'s, when given)."""
        if handler is None or self._captures.get(leg) == handler:
            self._captures.pop(leg, None)

    def _collector(self, leg: Leg, pass_on: Callable[[str], None]) -> _LegKeys | None:
        if not self._codes and not self._takers:
            return None
        make = (lambda: self._code_collector(leg, pass_on)) if self._codes else None
        return _LegKeys(leg, self._captures, self._takers, make, pass_on)

    def _code_collector(self, leg: Leg, pass_on: Callable[[str], None]) -> FeatureCodeCollector:
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
        """A feature that takes the number answers it; none: the number stays unknown (404)."""
        return any(handler(request, txn, caller_device, dialled) for handler in self._dialled)

    def _in_call_request(self, leg: Leg, request: Request, txn: ServerTransaction) -> bool:
        """The features that take in-dialog requests (REFER); none: 405, as before."""
        return any(handler(leg, request, txn) for handler in self._in_call)

    def _invite_replaces(self, request: Request, txn: ServerTransaction, source: Source) -> bool:
        """The features that take INVITE with Replaces; none: the header is ignored."""
        return any(handler(request, txn, source) for handler in self._replaces)
