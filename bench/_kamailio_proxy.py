"""Kamailio as a registrar and stateful proxy: the reference for calls between registered devices.

It extends ``bench/_kamailio.py`` (same life cycle, temporary directory, loopback only) with a
configuration that also routes calls: an INVITE outside a dialog is challenged with 407 (digest,
the caller's password from the same table as for REGISTER), Record-Routed and relayed with ``tm``
to the callee's registered Contact (``lookup("location")`` on the Request-URI user); requests
inside a dialog follow their Route set. Extensions are not modelled: a call is dialled to the
callee's device username. Media goes end to end (no relay).

Used by ``bench/calls`` (reference row) and by ``tests/interop/test_calls.py`` (to check the
baresip call helpers and the sipp call scenarios against an independent implementation).
"""

from __future__ import annotations

from dataclasses import dataclass

from _kamailio import Kamailio, find_module_path

__all__ = ["KamailioProxy"]


def _check(text: str) -> str:
    if any(ch in text for ch in '"\\\r\n$'):
        raise ValueError(f"unsupported character in {text!r}")
    return text


@dataclass
class KamailioProxy(Kamailio):
    """Registrar plus record-routing stateful proxy with digest on REGISTER and INVITE."""

    tm_fr_timer: int = 5000  # ms to wait for a final response when nothing came (Timer C-ish)

    def config_text(self) -> str:
        mpath = find_module_path()
        listen = [f"listen=udp:{self.host}:{self.port}"]
        if self.tcp:
            listen.append(f"listen=tcp:{self.host}:{self.port}")
        users = "\n".join(
            f'    $sht(users=>{_check(user)}) = "{_check(password)}";'
            for user, password in self.users.items()
        )
        fallback = (
            "        $var(known) = 0;\n"
            if self.default_password is None
            else f'        $var(pw) = "{_check(self.default_password)}";\n'
        )
        realm = _check(self.realm)
        return f"""#!KAMAILIO
# Written by bench/_kamailio_proxy.py for one run; not the system configuration.
debug={self.debug}
log_stderror=yes
fork=yes
children={self.children}
{chr(10).join(listen)}
{"" if self.tcp else "disable_tcp=yes"}
disable_sctp=yes
enable_tls=no
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=no
mpath="{mpath}"
alias="{realm}"
alias="{self.host}:{self.port}"

loadmodule "kex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "htable.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"

modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", {self.min_expires})
modparam("registrar", "max_expires", {self.max_expires})
modparam("registrar", "default_expires", {self.default_expires})
modparam("auth", "nonce_expire", 300)
modparam("htable", "htable", "users=>size=10;autoexpire=0;")
modparam("tm", "fr_timer", {self.tm_fr_timer})
modparam("tm", "fr_inv_timer", 30000)
modparam("rr", "enable_full_lr", 1)

event_route[htable:mod-init] {{
    $var(x) = 0;
{users}
}}

route[PASSWORD] {{
    $var(known) = 1;
    if ($sht(users=>$fU) != $null) {{
        $var(pw) = $sht(users=>$fU);
    }} else {{
{fallback}    }}
}}

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
            exit;
        }}
        sl_send_reply("404", "Not Here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("ACK")) {{
        t_check_trans();
        exit;
    }}
    if (is_method("OPTIONS") && $rU == $null) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (is_method("REGISTER")) {{
        route(PASSWORD);
        if ($var(known) == 0 || !pv_auth_check("{realm}", "$var(pw)", "0", "1")) {{
            auth_challenge("{realm}", "1");
            exit;
        }}
        consume_credentials();
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (t_check_trans()) {{
        exit;
    }}
    if (is_method("INVITE")) {{
        route(PASSWORD);
        if ($var(known) == 0 || !pv_auth_check("{realm}", "$var(pw)", "0", "1")) {{
            auth_challenge("{realm}", "1");
            exit;
        }}
        consume_credentials();
        record_route();
    }}
    if (!lookup("location")) {{
        sl_send_reply("404", "Not Found");
        exit;
    }}
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}
"""
