"""Call control: legs and dialogs of calls, offer/answer through the media relay, forking, session
timers and digits, and the API features program against (`sip_core.call.control`).

Call control never imports a feature (`sip_core.features`): features plug in through the hooks of
`CallControl` and the `Operation` slot a call carries (`sip_core.calls`).
"""
