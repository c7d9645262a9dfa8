"""Test helpers for code that sends mail: a scriptable SMTP server and a fake clock.

:class:`SMTPTestServer` is a real SMTP server (aiosmtpd) on a loopback port in a
background thread. Script its replies per stage and per attempt, make it drop the
connection or stall, serve STARTTLS or implicit TLS with test certificates, require AUTH,
and then assert on exactly what reached it::

    import smtplib
    from mailpolicy.testing import DROP, SMTPTestServer

    with SMTPTestServer() as server:
        server.script.greeting("421 4.3.2 Try again later")          # 1st connection
        server.script.rcpt("ann@example.org", "450 4.2.0 Greylisted", "250 2.1.5 Ok")
        server.script.end_of_data(DROP)                              # 1st message
        ...                                                          # run the code
        assert server.delivered_to("ann@example.org") == 1
        assert "bad@example" not in server.rcpt_addresses()

With pytest, the plugin ``mailpolicy.testing.pytest_plugin`` (registered automatically
when ``mailpolicy[testing]`` is installed) provides the fixtures ``smtp_server``,
``smtp_tls_server``, ``smtp_server_factory`` and ``fake_clock``. Requires the ``testing``
extra (aiosmtpd, trustme). Importing this package is cheap: the server and its
dependencies load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._clock import FakeClock
    from ._records import AuthAttempt, Exchange, Message
    from ._script import DEFAULT, DROP, SERVER_STAGES, Action, Delay, Script, ServerStage
    from ._server import SMTPTestServer, unused_port
    from ._tls import TLSFiles

__all__ = [
    "DEFAULT",
    "DROP",
    "SERVER_STAGES",
    "Action",
    "AuthAttempt",
    "Delay",
    "Exchange",
    "FakeClock",
    "Message",
    "SMTPTestServer",
    "Script",
    "ServerStage",
    "TLSFiles",
    "unused_port",
]

_HOME = {
    "DEFAULT": "_script",
    "DROP": "_script",
    "SERVER_STAGES": "_script",
    "Action": "_script",
    "AuthAttempt": "_records",
    "Delay": "_script",
    "Exchange": "_records",
    "FakeClock": "_clock",
    "Message": "_records",
    "SMTPTestServer": "_server",
    "Script": "_script",
    "ServerStage": "_script",
    "TLSFiles": "_tls",
    "unused_port": "_server",
}


def __getattr__(name: str) -> Any:
    # PEP 562: load on first use, so that registering the pytest plugin (which imports
    # this package) costs nothing when a test session never uses the server.
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
