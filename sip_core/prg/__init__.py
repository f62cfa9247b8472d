"""Personal Ring Groups: the group model (`prg.model`) and each member's Group Presence
(`prg.presence`). The Handoff feature (push and pull) and the ringing of a group's pilot number are
features (`sip_core.features.handoff`, `sip_core.features.ring_group`) built on these."""
