"""The scriptable SMTP test server: aiosmtpd on a loopback port, in a background thread."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import threading
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._records import AuthAttempt, Exchange, Message, Recorder
from ._script import Script
from ._tls import TLSFiles

if TYPE_CHECKING:
    from ._protocol import ScriptedSMTP

_LOOPBACK_NAMES = {"localhost"}


def _check_loopback(host: str) -> str:
    if host in _LOOPBACK_NAMES:
        return host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"the test SMTP server listens on loopback only, not on {host!r}")


def unused_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` with nothing listening (connecting to it is refused).

    The port is free when this returns; another process could take it later, which on a
    test machine is unlikely enough for connection-refused tests.
    """
    family = socket.AF_INET6 if ":" in _check_loopback(host) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class SMTPTestServer:
    """A real SMTP server on a loopback port, with scripted replies and full recording.

    Use it as a context manager (or call :meth:`start` / :meth:`stop`)::

        with SMTPTestServer() as server:
            server.script.rcpt("ann@example.org", "450 4.2.0 Greylisted", "250 2.1.5 Ok")
            with smtplib.SMTP(server.host, server.port, timeout=5) as client:
                ...
            assert server.delivered_to("bob@example.org") == 1

    ``port=0`` picks a free port (read it back from :attr:`port`). ``starttls=True`` or
    ``implicit_tls=True`` serve a certificate issued by a fresh test CA (or ``tls``, see
    :class:`TLSFiles`); :meth:`client_ssl_context` gives a verifying client context that
    trusts it. ``auth`` maps logins to passwords for AUTH PLAIN and LOGIN, advertised and
    accepted only under TLS unless ``auth_require_tls=False``; ``auth_required=True``
    refuses MAIL before a successful AUTH. ``size_limit`` advertises SIZE and refuses
    larger messages, ``max_recipients`` answers ``452 4.5.3`` past that many RCPTs in one
    transaction. Every wait is bounded: the server closes idle connections after
    ``idle_timeout`` seconds, and :meth:`stop` ends everything, even a pending ``Delay``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TLSFiles | None = None,
        starttls: bool = False,
        implicit_tls: bool = False,
        auth: Mapping[str, str] | None = None,
        auth_require_tls: bool = True,
        auth_required: bool = False,
        smtputf8: bool = True,
        size_limit: int | None = None,
        max_recipients: int | None = None,
        hostname: str = "mx.test",
        idle_timeout: float = 60.0,
    ) -> None:
        if starttls and implicit_tls:
            raise ValueError("choose starttls or implicit_tls, not both")
        if tls is None and (starttls or implicit_tls):
            tls = TLSFiles.issue("localhost", "127.0.0.1", hostname)
        self.host = _check_loopback(host)
        self.port = port
        self.tls = tls
        self.starttls = tls is not None and not implicit_tls
        self.implicit_tls = implicit_tls
        self.auth = dict(auth) if auth is not None else None
        self.auth_require_tls = auth_require_tls
        self.auth_required = auth_required
        self.smtputf8 = smtputf8
        self.size_limit = size_limit
        self.max_recipients = max_recipients
        self.hostname = hostname
        self.idle_timeout = idle_timeout
        #: The replies to give; see :class:`Script`.
        self.script = Script()
        self._recorder = Recorder()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._live: set[ScriptedSMTP] = set()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<SMTPTestServer {self.address} {state}>"

    # life cycle --------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._thread is not None

    def start(self, *, timeout: float = 10.0) -> SMTPTestServer:
        """Listen (again, on the same port after a :meth:`stop`). Returns the server."""
        from ._protocol import ScriptedSMTP, SessionConfig  # noqa: PLC0415 (aiosmtpd on use)

        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the test SMTP server is already running")
            tls_context = self.tls.server_context() if self.tls is not None else None
            config = SessionConfig(
                hostname=self.hostname,
                smtputf8=self.smtputf8,
                size_limit=self.size_limit,
                max_recipients=self.max_recipients,
                auth=self.auth,
                auth_require_tls=self.auth_require_tls,
                auth_required=self.auth_required,
                implicit_tls=self.implicit_tls,
                starttls_context=tls_context if self.starttls else None,
                idle_timeout=self.idle_timeout,
                script=self.script,
                recorder=self._recorder,
                live=self._live,
            )
            loop = asyncio.new_event_loop()
            listening = loop.create_server(
                lambda: ScriptedSMTP(config, loop),
                host=self.host,
                port=self.port,
                ssl=tls_context if self.implicit_tls else None,
                ssl_handshake_timeout=timeout if self.implicit_tls else None,
            )
            ready = threading.Event()
            outcome: list[asyncio.Server | BaseException] = []
            thread = threading.Thread(
                target=self._run,
                args=(loop, listening, ready, outcome),
                name="SMTPTestServer",
                daemon=True,
            )
            thread.start()
            if not ready.wait(timeout):
                raise TimeoutError(f"the test SMTP server did not start within {timeout} s")
            result = outcome[0]
            if isinstance(result, BaseException):
                thread.join(timeout)
                raise result
            self._server, self._loop, self._thread = result, loop, thread
            self.port = result.sockets[0].getsockname()[1]
        return self

    @staticmethod
    def _run(
        loop: asyncio.AbstractEventLoop,
        listening: Coroutine[Any, Any, asyncio.Server],
        ready: threading.Event,
        outcome: list[asyncio.Server | BaseException],
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                outcome.append(loop.run_until_complete(listening))
            except BaseException as error:  # handed to start(), in the caller's thread
                outcome.append(error)
                return
            finally:
                ready.set()
            loop.run_forever()
        finally:
            loop.close()

    def stop(self, *, timeout: float = 5.0) -> None:
        """Close every connection (mid-session or in a :class:`Delay` too), stop listening
        and end the thread, within ``timeout`` seconds. Recordings are kept; a stopped
        server can be started again. Does nothing if not running."""
        with self._lock:
            thread, loop, server = self._thread, self._loop, self._server
            if thread is None or loop is None or server is None:
                return
            try:
                done = asyncio.run_coroutine_threadsafe(self._shutdown(server), loop)
                done.result(timeout)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout)
                self._thread = self._loop = self._server = None
            if thread.is_alive():
                raise RuntimeError(f"the test SMTP server thread did not stop in {timeout} s")

    async def _shutdown(self, server: asyncio.Server) -> None:
        server.close()
        for session in list(self._live):
            session.abort()
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        await server.wait_closed()
        for _ in range(3):  # let connection_lost callbacks release the sockets
            await asyncio.sleep(0)

    def __enter__(self) -> SMTPTestServer:
        if not self.is_running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # TLS ---------------------------------------------------------------------------------
    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's test CA."""
        if self.tls is None:
            raise RuntimeError("this test SMTP server has no TLS (pass starttls=True)")
        return self.tls.client_context()

    # recordings --------------------------------------------------------------------------
    @property
    def messages(self) -> list[Message]:
        """Every message whose data arrived completely, in order (a copy); see
        :class:`Message` for accepted, rejected and dropped ones."""
        return self._recorder.snapshot_messages()

    @property
    def transcript(self) -> list[Exchange]:
        """Every command and reply on every connection, in order (a copy)."""
        return self._recorder.snapshot_transcript()

    @property
    def auth_attempts(self) -> list[AuthAttempt]:
        """Every credential check, successful or not (no passwords)."""
        return self._recorder.snapshot_auth()

    @property
    def connections(self) -> int:
        """How many connections reached the greeting (after the handshake for implicit
        TLS)."""
        return self._recorder.connections

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions inside the server itself (a bug); the pytest fixtures fail on them."""
        return self._recorder.snapshot_errors()

    def rcpt_addresses(self) -> list[str]:
        """The address of every RCPT TO command received, accepted or not, in order."""
        return self._recorder.rcpt_addresses()

    def delivered_to(self, address: str, *, include_dropped: bool = False) -> int:
        """How many accepted messages (2xx after the final dot) had ``address`` among their
        accepted recipients; with ``include_dropped``, also count the ambiguous ones."""
        return self._recorder.delivered_to(address, include_dropped=include_dropped)

    def wait_for_messages(self, count: int = 1, *, timeout: float = 5.0) -> list[Message]:
        """Block until at least ``count`` messages were recorded (raises ``TimeoutError``).
        Needed only after a client gave up before the server's reply, e.g. a timeout
        during a ``Delay`` after the final dot."""
        return self._recorder.wait_for_messages(count, timeout)

    def reset(self) -> None:
        """Forget every recording and every scripted reply not yet used."""
        self._recorder.clear()
        self.script.clear()
