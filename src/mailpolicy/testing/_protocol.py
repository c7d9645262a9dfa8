"""The SMTP session of the test server: aiosmtpd's protocol with a scripted command loop.

aiosmtpd supplies the transport plumbing (STARTTLS upgrade, AUTH PLAIN/LOGIN, MAIL/RCPT
argument parsing); this subclass owns the command loop, EHLO, DATA and QUIT so that every
reply can be scripted, recorded before it is written, dropped or delayed. It leans on a few
private aiosmtpd attributes (``_reader``, ``_writer``, ``_tls_protocol``,
``_original_transport``), which are stable in the 1.4 series.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

from ._records import AuthAttempt, Message, Recorder
from ._script import Action, Delay, Script, Scripted, ServerStage, format_reply

IDENT = "ESMTP mailpolicy.testing"

_STAGE_OF_VERB: dict[str, ServerStage] = {
    "EHLO": "ehlo",
    "HELO": "helo",
    "STARTTLS": "starttls",
    "AUTH": "auth",
    "MAIL": "mail",
    "RCPT": "rcpt",
    "DATA": "data",
    "RSET": "rset",
    "NOOP": "noop",
    "QUIT": "quit",
}
# AUTH <mechanism> <initial response>: the response carries the password (base64).
_AUTH_PAYLOAD = re.compile(r"^(\s*AUTH\s+\S+\s+)\S.*$", re.IGNORECASE)
# Failures that just mean "the client went away" (or broke the TLS handshake).
_DISCONNECTS = (OSError, TLSSetupException, asyncio.IncompleteReadError)


def redact(command: str) -> str:
    """The command line as recorded: an AUTH initial response becomes ``***``."""
    return _AUTH_PAYLOAD.sub(r"\1***", command)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """Everything a session needs from its server (shared, read-only)."""

    hostname: str
    smtputf8: bool
    size_limit: int | None
    max_recipients: int | None
    auth: Mapping[str, str] | None
    auth_require_tls: bool
    auth_required: bool
    implicit_tls: bool
    starttls_context: ssl.SSLContext | None
    idle_timeout: float
    script: Script
    recorder: Recorder
    live: set[ScriptedSMTP]


class _QuietSession(Session):
    # aiosmtpd sets Session.login_data after every successful AUTH, and that property
    # logs a deprecation warning each time; a plain attribute keeps the log clean.
    login_data: Any = None


class ScriptedSMTP(SMTP):
    """One client connection."""

    def __init__(self, config: SessionConfig, loop: asyncio.AbstractEventLoop) -> None:
        self._config = config
        self._connection_id = 0
        self._exchange: int | None = None
        self._override: list[str] | None = None
        self._swallow = False
        self._closing = False
        self._auth_login: str | None = None
        # aiosmtpd keeps command_size_limits on the class and mutates it per EHLO; an
        # instance dict keeps concurrent servers apart (our loop does not use it anyway).
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(
            object(),  # no handler hooks: this class answers everything itself
            data_size_limit=config.size_limit,
            enable_SMTPUTF8=config.smtputf8,
            decode_data=False,  # keep bytes exactly as received
            hostname=config.hostname,
            ident=IDENT,
            tls_context=config.starttls_context,
            timeout=config.idle_timeout,
            # Over implicit TLS every connection is encrypted, which aiosmtpd (looking
            # only at STARTTLS) cannot tell: let it allow AUTH, we decide in EHLO.
            auth_require_tls=config.auth_require_tls and not config.implicit_tls,
            authenticator=self._check_credentials,
            loop=loop,
        )

    # connection life cycle ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # a new connection (not the STARTTLS upgrade)
            self._connection_id = self._config.recorder.new_connection()
            self._config.live.add(self)
        else:  # RFC 3207 §4.2: forget everything learnt before TLS
            self._auth_login = None
        super().connection_made(transport)

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    def connection_lost(self, error: Exception | None) -> None:
        self._config.live.discard(self)
        super().connection_lost(error)

    def abort(self) -> None:
        """Close the connection at once (server shutdown)."""
        self._closing = True
        for transport in (self.transport, self._original_transport):
            if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
                transport.abort()

    def _close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def _drop(self) -> None:
        """Close without a reply: nothing more is written on this connection."""
        self._exchange = None
        self._close()

    def _in_tls(self) -> bool:
        return self._config.implicit_tls or self._tls_protocol is not None

    # writing replies ---------------------------------------------------------------------
    async def push(self, status: AnyStr) -> None:
        text = status if isinstance(status, str) else status.decode("utf-8", "backslashreplace")
        if self._closing:
            return
        if self._swallow:  # the rest of a multi-line reply that an override replaced
            self._swallow = text[3:4] == "-"
            return
        if self._override is not None and text[:1] == self._override[0][:1]:
            lines, self._override = self._override, None
            self._swallow = text[3:4] == "-"
            await self._send_lines(lines)
            return
        await self._send_lines([text])

    async def _send_lines(self, lines: list[str]) -> None:
        if self._closing:
            return
        for line in lines:
            # Recorded before it is written, so a client that has read a reply always
            # finds it in the transcript. AUTH challenges stay out of the transcript.
            if self._exchange is not None and not line.startswith("334 "):
                self._config.recorder.add_reply_line(self._exchange, line)
            self._writer.write(line.encode("utf-8", "surrogateescape") + b"\r\n")
        await self._writer.drain()

    async def _resolve(self, entry: Scripted) -> str | Action:
        if isinstance(entry, Delay):
            # A scripted wait is the server thinking, not the client idling: the idle
            # timeout must not turn a long Delay into a drop (it restarts afterwards).
            if self._timeout_handle is not None:
                self._timeout_handle.cancel()
            await asyncio.sleep(entry.seconds)
            self._reset_timeout()
            return entry.then
        return entry

    # the command loop --------------------------------------------------------------------
    async def _handle_client(self) -> None:
        try:
            await self._serve()
        except asyncio.CancelledError:
            raise
        except _DISCONNECTS:
            self._finish()
        except Exception as error:  # a bug in the test server: make the test fail
            self._config.recorder.add_error(error)
            self._finish()

    def _finish(self) -> None:
        # Also for a failed STARTTLS handshake, after which aiosmtpd never hears of the
        # connection again (no connection_lost): forget it and close what is left.
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self._config.live.discard(self)
        self._close()
        if self._original_transport is not None:
            self._original_transport.close()

    async def _serve(self) -> None:
        recorder = self._config.recorder
        self._exchange = recorder.begin(self._connection_id, "greeting", "")
        action = await self._resolve(self._config.script.next("greeting"))
        if action is Action.DROP:
            self._drop()
            return
        if isinstance(action, str):
            await self._send_lines(format_reply(action))
            if not action.startswith("2"):
                self._close()
                return
        else:
            await self._send_lines([f"220 {self._config.hostname} {IDENT}"])

        while self.transport is not None and not self._closing:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as error:
                await self._discard_line(error.consumed)
                self._exchange = recorder.begin(self._connection_id, None, "<line too long>")
                await self.push("500 5.5.2 Line too long")
                continue
            await self._dispatch(line.rstrip(b"\r\n"))

    async def _discard_line(self, consumed: int) -> None:
        await self._reader.read(consumed)
        while True:
            try:
                await self._reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as error:
                await self._reader.read(error.consumed)
            else:
                return

    async def _dispatch(self, line: bytes) -> None:
        verb_bytes, _, arg_bytes = line.partition(b" ")
        verb = verb_bytes.upper().decode("ascii", "replace")
        stage = _STAGE_OF_VERB.get(verb)
        command = redact(line.decode("utf-8", "backslashreplace"))
        self._exchange = self._config.recorder.begin(self._connection_id, stage, command)
        self._override = None
        self._swallow = False
        if not line or not verb_bytes.isascii():
            await self.push("500 Error: bad syntax")
            return
        arg: str | None = None
        if arg_bytes.strip():
            if self._config.smtputf8:
                arg = arg_bytes.strip().decode("utf-8", "surrogateescape")
            else:
                try:
                    arg = arg_bytes.strip().decode("ascii")
                except UnicodeDecodeError:
                    await self.push("500 Error: strict ASCII mode")
                    return
        method = self._smtp_methods.get(verb)
        if method is None:
            await self.push(f'500 Error: command "{verb}" not recognized')
            return
        self._reset_timeout()
        if stage is not None:
            recipient = self._recipient_of(arg) if stage == "rcpt" else None
            action = await self._resolve(self._config.script.next(stage, recipient))
            if action is Action.DROP:
                self._drop()
                return
            if isinstance(action, str):
                lines = format_reply(action)
                if action[0] in "45":
                    await self._send_lines(lines)
                    if action.startswith("421") or stage == "quit":
                        self._close()  # RFC 5321 §3.8: 421 closes the transmission channel
                    return
                self._override = lines
        await method(arg)

    def _recipient_of(self, arg: str | None) -> str | None:
        if arg is None:
            return None
        stripped = self._strip_command_keyword("TO:", arg)
        if stripped is None:
            return None
        address, _ = self._getaddr(stripped)
        return address or None

    # commands ----------------------------------------------------------------------------
    async def smtp_EHLO(self, hostname: str) -> None:  # noqa: N802 (aiosmtpd dispatches to smtp_<VERB>)
        if not hostname:
            await self.push("501 Syntax: EHLO hostname")
            return
        self.envelope = self._create_envelope()
        if self.session is None:  # set in connection_made, before any command
            return
        self.session.extended_smtp = True
        self.session.host_name = hostname
        keywords = [self._config.hostname]
        if self._config.size_limit:
            keywords.append(f"SIZE {self._config.size_limit}")
        keywords.append("8BITMIME")
        if self._config.smtputf8:
            keywords.append("SMTPUTF8")
        if self._config.starttls_context is not None and not self._in_tls():
            keywords.append("STARTTLS")
        if self._config.auth is not None and (self._in_tls() or not self._config.auth_require_tls):
            keywords.append("AUTH LOGIN PLAIN")
        keywords.append("HELP")
        for keyword in keywords[:-1]:
            await self.push(f"250-{keyword}")
        await self.push(f"250 {keywords[-1]}")

    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802 (aiosmtpd dispatches to smtp_<VERB>)
        if self._config.auth is None:
            await self.push("503 5.5.1 Error: authentication not enabled")
            return
        await super().smtp_AUTH(arg)

    def _check_credentials(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):  # aiosmtpd's PLAIN and LOGIN always pass one
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "backslashreplace")
        expected = (self._config.auth or {}).get(login)
        success = expected is not None and hmac.compare_digest(
            expected.encode("utf-8"), data.password
        )
        self._config.recorder.add_auth_attempt(
            AuthAttempt(
                connection_id=self._connection_id,
                mechanism=mechanism,
                login=login,
                success=success,
                tls=self._in_tls(),
            )
        )
        if success:
            self._auth_login = login
        return AuthResult(success=success, handled=False)

    async def smtp_MAIL(self, arg: str | None) -> None:  # noqa: N802 (aiosmtpd dispatches to smtp_<VERB>)
        if self._config.auth_required and self._auth_login is None:
            await self.push("530 5.7.0 Authentication required")
            return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:  # noqa: N802 (aiosmtpd dispatches to smtp_<VERB>)
        limit = self._config.max_recipients
        envelope = self.envelope
        if (
            limit is not None
            and envelope is not None
            and envelope.mail_from
            and len(envelope.rcpt_tos) >= limit
        ):
            await self.push("452 4.5.3 Error: too many recipients")
            return
        await super().smtp_RCPT(arg)

    async def smtp_QUIT(self, arg: str) -> None:  # noqa: N802 (aiosmtpd dispatches to smtp_<VERB>)
        if arg:
            await self.push("501 Syntax: QUIT")
            return
        await self.push("221 Bye")
        self._close()

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 (aiosmtpd dispatches to smtp_<VERB>)
        if await self.check_helo_needed():
            return
        envelope = self.envelope
        if envelope is None or not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._override = None
        wire = bytearray()
        too_long = too_big = False
        at_line_start = True
        limit = self._config.size_limit
        while True:
            try:
                chunk = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as error:
                chunk = await self._reader.read(error.consumed)
                too_long = True
            # Only CRLF "." CRLF ends the data (RFC 5321 §4.1.1.4): a dot after a bare LF
            # or CR does not, which is exactly what SMTP smuggling tests need to see.
            if at_line_start and chunk == b".\r\n":
                break
            at_line_start = chunk.endswith(b"\r\n")
            if too_long or too_big:
                continue
            wire += chunk
            if limit and len(wire) > limit:
                too_big = True
                wire.clear()
        if too_long or too_big:
            self.envelope = self._create_envelope()
            await self.push(
                "500 5.5.2 Line too long (RFC 5321 section 4.5.3.1.6)"
                if too_long
                else "552 5.3.4 Error: message size exceeds fixed maximum message size"
            )
            return
        await self._end_of_data(envelope, bytes(wire))

    async def _end_of_data(self, envelope: Envelope, wire: bytes) -> None:
        # RFC 5321 §4.5.2: remove one leading dot from every line.
        data = b"\r\n".join(
            line[1:] if line.startswith(b".") else line for line in wire.split(b"\r\n")
        )
        self._exchange = self._config.recorder.begin(self._connection_id, "end_of_data", ".")
        entry = self._config.script.next("end_of_data")
        try:
            action = await self._resolve(entry)
        except asyncio.CancelledError:  # client gone or server stopping during a Delay
            self._record(envelope, data, wire, reply=None)
            raise
        if action is Action.DROP:
            self._record(envelope, data, wire, reply=None)
            self._drop()
            return
        lines = format_reply(action) if isinstance(action, str) else ["250 OK"]
        self._record(envelope, data, wire, reply="\n".join(lines))
        self.envelope = self._create_envelope()
        await self._send_lines(lines)
        if lines[0].startswith("421"):
            self._close()

    def _record(self, envelope: Envelope, data: bytes, wire: bytes, *, reply: str | None) -> None:
        self._config.recorder.add_message(
            Message(
                connection_id=self._connection_id,
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                mail_options=tuple(envelope.mail_options),
                rcpt_options=tuple(envelope.rcpt_options),
                data=data,
                wire_data=wire,
                tls=self._in_tls(),
                auth_login=self._auth_login,
                smtputf8=envelope.smtp_utf8,
                reply=reply,
                dropped=reply is None,
            )
        )
