"""pytest fixtures for testing code that sends mail (entry point ``pytest11``).

Fixtures: ``smtp_server`` (a running plain server), ``smtp_tls_server`` (STARTTLS with a
test CA: use ``smtp_tls_server.client_ssl_context()``), ``smtp_server_factory`` (call it
with :class:`~mailpolicy.testing.SMTPTestServer` keyword arguments; every server it
started is stopped at teardown) and ``fake_clock``. A server that raised internally fails
the test at teardown. Nothing heavy is imported until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mailpolicy.testing import FakeClock, SMTPTestServer


@pytest.fixture
def smtp_server_factory() -> Iterator[Callable[..., SMTPTestServer]]:
    """Start test SMTP servers with any constructor arguments; all stopped afterwards."""
    from mailpolicy.testing import SMTPTestServer  # noqa: PLC0415 (keep the plugin cheap)

    started: list[SMTPTestServer] = []

    def start(**options: Any) -> SMTPTestServer:
        server = SMTPTestServer(**options)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
    errors = [error for server in started for error in server.errors]
    if errors:
        pytest.fail(f"the test SMTP server failed internally: {errors!r}")


@pytest.fixture
def smtp_server(smtp_server_factory: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    """A running plain-text test SMTP server on 127.0.0.1 (no TLS, no AUTH)."""
    return smtp_server_factory()


@pytest.fixture
def smtp_tls_server(smtp_server_factory: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    """A running test SMTP server offering STARTTLS with a certificate from a test CA."""
    return smtp_server_factory(starttls=True)


@pytest.fixture
def fake_clock() -> FakeClock:
    """A :class:`~mailpolicy.testing.FakeClock` at monotonic 0."""
    from mailpolicy.testing import FakeClock  # noqa: PLC0415 (keep the plugin cheap)

    return FakeClock()
