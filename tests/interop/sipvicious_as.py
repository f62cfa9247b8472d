"""Run one SIPVicious tool from a chosen source address, optionally under another User-Agent.

Usage (with the Python that has SIPVicious, Debian's ``/usr/bin/python3``)::

    python3 sipvicious_as.py SOURCE_IP USER_AGENT|- TOOL [tool arguments...]

SIPVicious 0.3.3 ignores its ``--bindingip`` option in ``svwar`` and ``svcrack`` and always sends
its own User-Agent (``friendly-scanner``). A real attacker edits one line to change either; this
wrapper does the same from outside: every socket it binds to the wildcard address binds to
``SOURCE_IP`` instead, and ``USER_AGENT`` (``-``: keep the tool's own) replaces the default of the
request builder. The tool itself runs unchanged.
"""

import importlib
import inspect
import socket
import sys

SIPVICIOUS = "/usr/share/sipvicious"


def main() -> None:
    source, agent, tool, *arguments = sys.argv[1:]
    sys.path.insert(0, SIPVICIOUS)
    from sipvicious.libs import svhelper

    original_bind = socket.socket.bind

    def bind(self: socket.socket, address: object) -> None:
        if isinstance(address, tuple) and address[0] in ("", "0.0.0.0"):
            address = (source, *address[1:])
        original_bind(self, address)

    socket.socket.bind = bind  # type: ignore[method-assign]
    if agent != "-":
        names = list(inspect.signature(svhelper.makeRequest).parameters)
        defaults = list(svhelper.makeRequest.__defaults__ or ())
        defaults[names.index("useragent") - (len(names) - len(defaults))] = agent
        svhelper.makeRequest.__defaults__ = tuple(defaults)
    sys.argv = [tool, *arguments]
    importlib.import_module(f"sipvicious.{tool}").main()


if __name__ == "__main__":
    main()
