"""One SMTP connection and the transactions on it: the only module that touches smtplib.

Each failure is turned into a :class:`~mailpolicy.Verdict` at the stage it happened;
the caller (the sender) applies the policy. Security rules enforced here (DESIGN.md §4,
research/validation-security.md part B): verified TLS by default, STARTTLS required when
asked for (no silent plaintext fallback), AUTH only over TLS unless explicitly allowed,
finite timeouts, a fresh connection after 421 or a drop.
"""

from __future__ import annotations

import contextlib
import functools
import re
import select
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

from ._classify import Verdict, classify, classify_error, success_verdict
from ._errors import MailPolicyError
from ._message import PreparedMessage
from ._relaystate import relay_key
from ._rules import RuleSet
from ._vocab import Stage

Security = Literal["starttls", "ssl", "none"]
SECURITY_MODES: Final[tuple[Security, ...]] = ("starttls", "ssl", "none")

T = TypeVar("T")


#: How much later than a deadline a reply may end, rather than a system call per line.
_SLACK: Final = 0.1
#: The most lines and bytes one reply may have. RFC 5321 sets no limit on a multi-line
#: reply, and smtplib keeps every line it reads: a server (or, before STARTTLS, anyone on
#: the path) sending "250-" lines forever made it grow until the process was killed
#: (security review: 3.8 GB in 15 s). Real replies have a few lines (an EHLO list, a
#: Gmail explanation); one past these limits ends the connection as a network error.
MAX_REPLY_LINES: Final = 200
#: The longest reply line smtplib reads (its private ``_MAXLINE``).
_SMTPLIB_MAXLINE: Final[int] = getattr(smtplib, "_MAXLINE", 8192)
MAX_REPLY_BYTES: Final = 64 * 1024


class _DeadlineFile:
    """The reader smtplib takes replies from, bounding a whole reply in time and size:
    smtplib reads a reply line by line and every line restarts the socket timeout, so a
    server feeding a multi-line reply one line a second could hold a command for as long
    as it liked (research/validation-security.md, T-18). A reply must be complete
    within the connection's ``reply_deadline`` (a ``send()``'s deadline) or, without
    one, within the socket timeout in effect when it began (the command's timeout);
    before each read of the socket its timeout is cut to what is left (when that is
    within :data:`_SLACK`), and none left is a timeout, as if the socket had timed out.
    A reply of more than :data:`MAX_REPLY_LINES` lines or :data:`MAX_REPLY_BYTES` bytes
    ends the connection (an ``OSError``, which smtplib turns into
    ``SMTPServerDisconnected``)."""

    def __init__(self, raw: Any, conn: smtplib.SMTP) -> None:
        # Our own buffer, read from the socket: whether bytes wait after a reply is then
        # known without a system call (peeking the socket per reply cost 60 us a message:
        # bench/send.py). A reader handed over (the caller's connection) is drained into
        # it once, with a look that does not wait.
        self._raw = raw
        self._buf = bytearray()
        self._conn = conn
        self._in_reply = False  # a continuation line ("250-") was the last one read
        self._cut = False  # the socket's timeout was cut to what is left of a deadline
        self._lines = 0
        self._bytes = 0
        self._timeout: float | None = None
        self._reply_deadline: float | None = None
        if raw is not None and conn.sock is not None and hasattr(raw, "peek"):
            self._buf += _buffered_now(raw, conn.sock)

    def _start_reply(self) -> None:
        """A new reply begins: its own limits, from the socket timeout set for it."""
        self._lines = self._bytes = 0
        sock = self._conn.sock
        self._timeout = None if sock is None else sock.gettimeout()
        self._reply_deadline = None if self._timeout is None else time.monotonic() + self._timeout

    def readline(self, limit: int = -1) -> bytes:
        if not self._in_reply:  # the first line of a reply
            self._start_reply()
        deadline, sock = getattr(self._conn, "reply_deadline", None), self._conn.sock
        own = self._reply_deadline
        if own is not None and (deadline is None or own < deadline):
            deadline = own
        line = self._read_line(sock, limit, deadline)
        if line and not line[:3].isdigit():
            # smtplib stops at a line without a code (returns -1) and leaves the rest of
            # the reply in the buffer: every later command would read the reply before
            # its own, and a stale "250" be taken for DATA's or the final dot's answer
            # (eleventh review: undelivered mail reported delivered). Unreadable: the
            # connection is abandoned, as for a lost one.
            raise OSError("a reply line without a reply code: connection abandoned")
        if len(line) > _SMTPLIB_MAXLINE:
            # smtplib would raise SMTPResponseException(500, "Line too long."): a reply
            # code the server never sent, read as a permanent refusal (fuzz review; after
            # the final dot, a bounce of a message the server may have taken). It is an
            # unreadable reply: the connection is abandoned, as for a lost one.
            raise OSError(f"reply line longer than {_SMTPLIB_MAXLINE} bytes: connection abandoned")
        self._lines += 1
        self._bytes += len(line)
        if self._lines > MAX_REPLY_LINES or self._bytes > MAX_REPLY_BYTES:
            raise OSError(
                f"reply too long (more than {MAX_REPLY_LINES} lines or "
                f"{MAX_REPLY_BYTES // 1024} KiB): connection abandoned"
            )
        self._in_reply = line[3:4] == b"-"
        if not self._in_reply and sock is not None and self._cut:
            # The reply's last line: the next reply of the same command (an AUTH
            # exchange) starts from the command's timeout, not from what this one left.
            sock.settimeout(self._timeout)
            self._cut = False
        if not self._in_reply and line and self._buf:
            # Commands are never pipelined: bytes already here after a reply's last line
            # are a reply nobody asked for yet, and every later command would read the
            # one before its own ("220 first" "220 second": a 550 for ann taken for bob
            # and bob suppressed; thirteenth review). Out of step: abandoned.
            raise OSError("the server sent more than one reply: connection abandoned")
        return line

    def _read_line(self, sock: socket.socket | None, limit: int, deadline: float | None) -> bytes:
        """One line from the buffer, reading the socket as needed, each read within what
        is left of ``deadline`` (per read, not per line: a line fed a byte at a time
        held a command ten times its timeout; review); what is there at the end of the
        stream."""
        buf = self._buf
        while True:
            nl = buf.find(b"\n")
            if nl >= 0:
                end = nl + 1
                break
            if (limit > 0 and len(buf) >= limit) or sock is None:
                end = len(buf) if limit <= 0 else min(limit, len(buf))
                break
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the reply did not complete before the deadline")
                current = sock.gettimeout()
                # Cut only when it matters (a tenth of a second): each settimeout() is two
                # system calls, and a reply mostly comes in one read (bench/send.py).
                if current is None or current > left + _SLACK:
                    sock.settimeout(left)
                    self._cut = True
            chunk = sock.recv(8192)
            if not chunk:
                end = len(buf)
                break
            buf += chunk
        line = bytes(buf[:end])
        del buf[:end]
        return line

    @property
    def waiting(self) -> bool:
        """Whether bytes are here that no reply read yet took."""
        return bool(self._buf)

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()


def _buffered_now(reader: Any, sock: socket.socket) -> bytes:
    """What a buffered reader holds (or the socket has) now, taken without waiting."""
    before = sock.gettimeout()
    try:
        sock.settimeout(0)
        data: bytes = reader.peek(65536) or b""
        return reader.read(len(data)) if data else b""
    except (OSError, ValueError):  # nothing there (EAGAIN, SSLWantRead), or closed
        return b""
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(before)


class _BoundedReplies:
    """Mixed into smtplib's classes: replies read through :class:`_DeadlineFile` from
    the greeting on (the MRO puts smtplib's ``__init__`` and connect after this one)."""

    reply_deadline: float | None

    def __init__(self, *args: Any, reply_deadline: float | None = None, **kwargs: Any) -> None:
        self.reply_deadline = reply_deadline  # before connecting: the greeting is a reply
        super().__init__(*args, **kwargs)

    def getreply(self) -> tuple[int, bytes]:
        _bounded_reader(self)  # type: ignore[arg-type]  # mixed into smtplib.SMTP
        reply: tuple[int, bytes] = super().getreply()  # type: ignore[misc]
        return reply


_BOUNDED: Final[dict[Any, Any]] = {}  # smtplib class -> its bounded subclass


def _bounded_subclass(base: type[smtplib.SMTP]) -> type[smtplib.SMTP]:
    found = _BOUNDED.get(base)
    if found is None:
        found = _BOUNDED.setdefault(
            base, type(f"Bounded{base.__name__}", (_BoundedReplies, base), {})
        )
    bounded: type[smtplib.SMTP] = found
    return bounded


def bounded_smtp_class(base: Any) -> Any:
    """``base`` (``smtplib.SMTP`` or ``SMTP_SSL`` as they are now) reading replies
    bounded; built when first needed, not at import: a test that patches smtplib's
    classes with a mock before this module is imported must not break the import
    (twelfth review), and gets its mock back, used as given."""
    try:
        if not isinstance(base, type) or not issubclass(base, smtplib.SMTP):
            return base
    except TypeError:  # smtplib.SMTP itself mocked (SMTP_SSL asked for): as given
        return base
    return _bounded_subclass(base)


def _bounded_reader(conn: smtplib.SMTP) -> None:
    """Read ``conn``'s replies through :class:`_DeadlineFile`: ours do so from their
    first reply; a connection handed over by the caller (a plain ``smtplib.SMTP``) from
    the next command on, what its own reader had buffered taken over (review: without
    it, neither the size caps nor the deadlines held). Again after STARTTLS, where
    smtplib drops its reader."""
    if conn.sock is not None and not isinstance(conn.file, _DeadlineFile):
        conn.file = _DeadlineFile(conn.file, conn)


def _set_reply_deadline(conn: smtplib.SMTP, deadline: float | None) -> None:
    conn.reply_deadline = deadline  # type: ignore[attr-defined]  # read by _DeadlineFile


@functools.cache
def default_local_hostname() -> str:
    """The EHLO name, looked up once per process (smtplib calls getfqdn() per
    connection, which can take seconds on a machine without reverse DNS)."""
    return socket.getfqdn()


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionSettings:
    """Where and how to connect. ``password`` is never shown (repr=False)."""

    host: str
    port: int
    security: Security
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    timeout: float = 30.0
    end_of_data_timeout: float = 600.0
    local_hostname: str | None = None
    allow_insecure_auth: bool = False
    #: ``time.monotonic()`` value after which no command may wait any longer: the
    #: in-request deadline of a ``send()`` (None: only the per-command timeout).
    deadline_at: float | None = None
    #: Whether the wait after the final dot is cut by ``deadline_at`` too (a ``send()``
    #: in a request; DESIGN.md §4), or waits the whole ``end_of_data_timeout`` (the
    #: worker, or an explicit ``end_of_data_timeout``).
    end_of_data_within_deadline: bool = False
    #: The classification rules replies are judged by (the policy's ``classifier``);
    #: None: the shipped ones.
    rules: RuleSet | None = field(default=None, repr=False, compare=False)

    def wait_for(self, timeout: float) -> float:
        """``timeout`` cut to what is left of the deadline, measured now: a command
        started past the deadline times out at once and counts as a timeout."""
        if self.deadline_at is None:
            return timeout
        return max(0.001, min(timeout, self.deadline_at - time.monotonic()))

    @property
    def relay(self) -> str:
        """The ``host:port`` retry budgets and circuits are kept for, and the outbox files
        messages under: the host lower-cased, without a final dot (host names are
        case-insensitive, RFC 4343), so a worker started with another spelling of the
        host still claims them."""
        return relay_key(self.host, self.port)


class StageError(MailPolicyError):
    """A failure before any transaction could run (connect, greeting, EHLO, STARTTLS,
    AUTH): it applies to every recipient of the attempt. ``Sender.open()`` raises it;
    ``send()`` turns it into outcomes. ``verdict`` is the classified failure, ``text``
    the server's reply or the network error. A failure at AUTH is never chained to the
    exception that caused it: smtplib's frames there hold the password in their locals,
    which error trackers that capture locals would record."""

    def __init__(self, verdict: Verdict, text: str = "") -> None:
        self.verdict = verdict
        self.text = text or str(verdict.reason)
        super().__init__(f"{verdict.stage}: {verdict.reason}: {self.text}")


@dataclass(slots=True)
class RecipientResult:
    """What one transaction did for one recipient. ``verdict`` is the deciding reply
    (success after the final dot, or the failure); ``ambiguous`` says the connection
    broke after the final dot, before the reply (the message may have been accepted);
    ``rebatch`` that the server asked for the recipient in a new transaction."""

    recipient: str
    verdict: Verdict | None = None
    text: str = ""
    ambiguous: bool = False
    rebatch: bool = False


def _check_quiet(conn: smtplib.SMTP, *, reused: bool) -> None:
    """Before MAIL: the server has said nothing since its last reply (we never
    pipeline). Bytes read but not taken by a reply are the reader's buffer: a reader
    handed over with a reply in it (every other reply's leftovers already abandon the
    connection at its last line, so this is the one place to look). On a reused
    connection, also one select() a message (not a peek per command: 60 us a message
    in bench/send.py): a reply written on its own while it sat idle (a late "250", a
    421) would otherwise answer MAIL, and every later reply go to the wrong command
    (review: a good recipient bounced with another's 550)."""
    reader = conn.file
    if isinstance(reader, _DeadlineFile) and reader.waiting:
        raise OSError("the server sent a reply nobody asked for: connection abandoned")
    sock = conn.sock
    if not reused or sock is None:
        return
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        raise OSError("the server sent a reply nobody asked for: connection abandoned")
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return
    if readable:
        raise OSError("the server sent something while idle: connection abandoned")


def _check_reply_class(code: int, reply: bytes) -> None:
    """MAIL, RCPT and the final dot are answered 2xx, 4xx or 5xx. A 1xx or 3xx there (or
    a code past 5xx) answers nothing we asked, and was read as success: "354" to RCPT
    reported delivered a message never sent (twelfth review). An unreadable reply."""
    if not (200 <= code < 300 or 400 <= code < 600):
        raise OSError(f"unexpected reply {_reply_text(code, reply)!r}: connection abandoned")


def _reply_text(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {text}" if code > 0 else text


_SUCCESS_STATUS: Final = re.compile(r"2\.([0-9]{1,3})\.([0-9]{1,3})(?![0-9.])")


def _verdict(
    code: int, message: bytes | str, stage: Stage, host: str, rules: RuleSet | None
) -> tuple[Verdict, str]:
    text = _reply_text(code, message)
    if 200 <= code < 300:
        # A success needs no rules (classify() would say the same, after parsing the
        # whole text): only the enhanced status, if the reply starts with one.
        m = _SUCCESS_STATUS.match(text, 4)
        status = None if m is None else f"2.{int(m.group(1))}.{int(m.group(2))}"
        return success_verdict(code, status, stage), text
    return classify(text, stage=stage, host=host, rules=rules), text


#: AUTH mechanisms in order of preference (RFC 4954): under TLS the plain ones (PLAIN is
#: one round trip); over plaintext (allow_insecure_auth) CRAM-MD5 first, as smtplib does,
#: because it does not reveal the password.
_AUTH_OVER_TLS: Final = ("PLAIN", "LOGIN", "CRAM-MD5")
_AUTH_IN_CLEAR: Final = ("CRAM-MD5", "PLAIN", "LOGIN")


def _login_once(conn: smtplib.SMTP, username: str, password: str) -> None:
    """smtplib's ``login()`` with one mechanism. ``login()`` tries the next mechanism
    after a 535, so one wrong password cost two or three failed AUTHs per connection:
    providers lock accounts and block IPs on counts of those."""
    conn.ehlo_or_helo_if_needed()
    if not conn.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    advertised = conn.esmtp_features["auth"].upper().split()
    order = _AUTH_OVER_TLS if isinstance(conn.sock, ssl.SSLSocket) else _AUTH_IN_CLEAR
    mechanism = next((m for m in order if m in advertised), None)
    if mechanism is None:
        raise smtplib.SMTPException(
            f"no supported AUTH mechanism offered ({', '.join(advertised) or 'none'})"
        )
    conn.user, conn.password = username, password
    method = getattr(conn, "auth_" + mechanism.lower().replace("-", "_"))
    conn.auth(mechanism, method, initial_response_ok=True)  # raises on a failure reply


def _lost(exc: BaseException, stage: Stage, rules: RuleSet | None = None) -> Verdict:
    """A dropped connection; a socket timeout hides behind SMTPServerDisconnected."""
    cause = exc.__context__ if isinstance(exc, smtplib.SMTPServerDisconnected) else None
    return classify_error(
        cause if isinstance(cause, TimeoutError) else exc, stage=stage, rules=rules
    )


def _stage_error(exc: BaseException, stage: Stage, rules: RuleSet | None) -> StageError:
    """The failure of one step: the server's reply, or a lost or refused connection."""
    if isinstance(exc, smtplib.SMTPResponseException):
        if stage == "connect" and isinstance(exc, smtplib.SMTPConnectError):
            # The socket is up and the server answered: its greeting refused us
            # (DESIGN.md §2 keeps the two stages apart; policies match on greeting).
            stage = "greeting"
        return StageError(
            classify_error(exc, stage=stage, rules=rules),
            _reply_text(exc.smtp_code, exc.smtp_error),
        )
    return StageError(_lost(exc, stage, rules), f"{type(exc).__name__}: {exc}")


class Session:
    """An SMTP connection that opens on first need and is discarded after 421 or a drop.

    ``connection`` may be an already open ``smtplib.SMTP`` (the Django backend hands
    over its own); it is then used as it is.
    """

    def __init__(self, settings: ConnectionSettings, connection: smtplib.SMTP | None = None):
        self.settings = settings
        self.connection = connection
        self._fresh = connection is None
        # A connection attempt made (and failed) before this session, by its owner.
        self._failed_open: StageError | None = None
        self._failed_open_cause: BaseException | None = None

    def failed_open(self, exc: BaseException) -> None:
        """Record that connecting already failed with ``exc`` (the Django backend's own
        ``open()``): the next :meth:`open` raises it instead of connecting, so that
        failure is the first attempt of the send, counted, logged and judged like one."""
        self._failed_open = _stage_error(exc, "connect", self.settings.rules)
        self._failed_open_cause = exc

    def unused_failed_open(self) -> BaseException | None:
        """The failure given to :meth:`failed_open` if no :meth:`open` has used it yet (a
        send that never connected: all its recipients invalid or suppressed)."""
        return self._failed_open_cause if self._failed_open is not None else None

    @property
    def is_open(self) -> bool:
        return self.connection is not None and getattr(self.connection, "sock", None) is not None

    def end_request(self, settings: ConnectionSettings) -> None:
        """Back to ``settings`` (without a request's deadline) after a send(); the open
        connection, if any, stops bounding replies by that deadline."""
        self.settings = settings
        if self.connection is not None:
            _set_reply_deadline(self.connection, settings.deadline_at)

    def supports(self, extension: str) -> bool:
        return self.connection is not None and self.connection.has_extn(extension)

    def close(self, *, polite: bool = True) -> None:
        """QUIT (when ``polite`` and the server is still there) and forget the socket."""
        conn, self.connection = self.connection, None
        if conn is None:
            return
        try:
            if polite and getattr(conn, "sock", None) is not None:
                conn.quit()
        except (smtplib.SMTPException, OSError):
            pass  # a server gone during QUIT changes nothing (flask-mail#139)
        finally:
            conn.close()

    def _step(self, stage: Stage, call: Callable[[], T]) -> T:
        try:
            return call()
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            failure = _stage_error(exc, stage, self.settings.rules)
            cause: BaseException | None = exc
        self.close(polite=False)
        if stage == "auth":
            # Raised outside the except block and unchained: the AUTH exception's
            # traceback reaches smtplib's login frames, whose locals hold the password
            # and its base64 form.
            del cause
            raise failure
        raise failure from cause

    def open(self) -> None:
        """Connect, read the greeting, EHLO, STARTTLS, EHLO again, AUTH, as configured.
        Raises :class:`StageError` naming the stage that failed."""
        if self._failed_open is not None:
            failure, self._failed_open = self._failed_open, None
            raise failure
        if self.is_open:
            return
        s = self.settings
        local = s.local_hostname or default_local_hostname()
        # Built only when TLS is used: creating a default context loads the system CA
        # store (20-30 ms, bench/send.py).
        context = s.ssl_context
        if context is None and s.security != "none":
            context = ssl.create_default_context()
        conn: smtplib.SMTP
        if s.security == "ssl":
            conn = self._step(
                "connect",
                lambda: bounded_smtp_class(smtplib.SMTP_SSL)(
                    s.host,
                    s.port,
                    local_hostname=local,
                    timeout=s.wait_for(s.timeout),
                    reply_deadline=s.deadline_at,
                    context=context,
                ),
            )
        else:
            # smtplib.SMTP(host) connects and reads the greeting; a non-220 greeting is
            # SMTPConnectError with the server's reply.
            conn = self._step(
                "connect",
                lambda: bounded_smtp_class(smtplib.SMTP)(
                    s.host,
                    s.port,
                    local,
                    timeout=s.wait_for(s.timeout),
                    reply_deadline=s.deadline_at,
                ),
            )
        self.connection = conn
        self._fresh = True
        self._ehlo(conn)
        if s.security == "starttls":
            if not conn.has_extn("starttls"):
                self.close()
                why = "STARTTLS is required (security='starttls') but the server does not offer it"
                raise StageError(
                    classify_error(smtplib.SMTPNotSupportedError(why), stage="starttls"), why
                )
            self._arm(conn)
            self._step("starttls", lambda: conn.starttls(context=context))
            self._ehlo(conn)
        if s.username is not None:
            self._auth(conn)

    def _arm(self, conn: smtplib.SMTP) -> None:
        """Set the socket's timeout for the next command: the per-command timeout, cut
        to what is left of the in-request deadline (DESIGN.md §4), which also bounds the
        whole reply however slowly its lines come."""
        _set_reply_deadline(conn, self.settings.deadline_at)
        _bounded_reader(conn)
        if conn.sock is not None:
            conn.sock.settimeout(self.settings.wait_for(self.settings.timeout))

    def _ehlo(self, conn: smtplib.SMTP) -> None:
        self._arm(conn)
        code, reply = self._step("ehlo", conn.ehlo)
        if code in (500, 502, 504):  # EHLO not understood: an old server; try HELO
            code, reply = self._step("ehlo", conn.helo)
        if not 200 <= code < 300:
            verdict, text = _verdict(code, reply, "ehlo", self.settings.host, self.settings.rules)
            self.close(polite=code != 421)
            raise StageError(verdict, text)

    def _auth(self, conn: smtplib.SMTP) -> None:
        s = self.settings
        tls = isinstance(conn.sock, ssl.SSLSocket)
        if not tls and not s.allow_insecure_auth:
            # Checked when the Sender is built too; this guards handed-over connections.
            self.close()
            why = "AUTH over a plaintext connection refused (allow_insecure_auth is off)"
            raise StageError(classify_error(smtplib.SMTPNotSupportedError(why), stage="auth"), why)
        # The password is never bound to a local of this frame (a traceback of the
        # StageError below passes through it): it is read from the settings, whose repr
        # hides it.
        username = s.username or ""
        if not (username.isascii() and (s.password or "").isascii()):
            # smtplib encodes AUTH as ASCII: its UnicodeEncodeError would quote a character
            # of the password and its position. Refuse without saying which.
            self.close()
            why = (
                "the SMTP username or password has non-ASCII characters, which smtplib cannot send"
            )
            raise StageError(
                classify_error(smtplib.SMTPNotSupportedError("auth: " + why), stage="auth"), why
            )
        self._arm(conn)
        try:
            self._step("auth", lambda: _login_once(conn, username, s.password or ""))
        finally:
            # smtplib keeps the credentials on the connection object after login; this
            # one stays open (and is reachable as Sender.connection) for later sends.
            conn.user = conn.password = None  # type: ignore[assignment]

    def transaction(
        self,
        message: PreparedMessage,
        envelope_from: str,
        recipients: Sequence[tuple[str, str]],
        *,
        smtputf8: bool,
    ) -> list[RecipientResult]:
        """MAIL, RCPT per recipient, DATA to the accepted ones; one result per
        ``(recipient, wire address)`` pair, in order. Opens the connection if needed
        (raising :class:`StageError` if that fails); a reused connection that turns
        out to be closed is reopened once, transparently."""
        self.open()
        try:
            return self._transaction(message, envelope_from, recipients, smtputf8=smtputf8)
        except _StaleConnectionError:
            self.close(polite=False)
            self.open()
            return self._transaction(message, envelope_from, recipients, smtputf8=smtputf8)

    def _transaction(
        self,
        message: PreparedMessage,
        envelope_from: str,
        recipients: Sequence[tuple[str, str]],
        *,
        smtputf8: bool,
    ) -> list[RecipientResult]:
        conn = self.connection
        if conn is None:  # open() just succeeded; this only narrows the type
            raise _StaleConnectionError
        host, rules = self.settings.host, self.settings.rules
        results = [RecipientResult(recipient=r) for r, _ in recipients]
        fresh, self._fresh = self._fresh, False

        self._arm(conn)

        options: list[str] = []
        if smtputf8:
            options.append("SMTPUTF8")
        if message.eight_bit and conn.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if conn.has_extn("size"):
            options.append(f"SIZE={len(message.data)}")

        def fail_all(verdict: Verdict, text: str, targets: Sequence[RecipientResult]) -> None:
            for r in targets:
                r.verdict, r.text = verdict, text

        # --- MAIL FROM (addresses were validated: sent as they are, without smtplib's
        # re-parsing in mail()/rcpt(), which costs 10-20 us a command)
        try:
            _check_quiet(conn, reused=not fresh)
            code, reply = _command(conn, "mail", f"FROM:<{envelope_from}>", options)
            _check_reply_class(code, reply)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            if not fresh:
                raise _StaleConnectionError from exc  # an idle pooled connection timed out
            self.close(polite=False)
            fail_all(_lost(exc, "mail", rules), str(exc), results)
            return results
        if not 200 <= code < 300:
            verdict, text = _verdict(code, reply, "mail", host, rules)
            fail_all(verdict, text, results)
            self._after_failure(code)
            return results

        # --- RCPT TO, one by one (RFC 5321: replies are per recipient)
        accepted: list[RecipientResult] = []
        for i, (result, (_, wire)) in enumerate(zip(results, recipients, strict=True)):
            try:
                self._arm(conn)
                code, reply = _command(conn, "rcpt", f"TO:<{wire}>", ())
                _check_reply_class(code, reply)
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self.close(polite=False)
                fail_all(_lost(exc, "rcpt", rules), str(exc), results[i:] + accepted)
                return results
            if 200 <= code < 300:
                accepted.append(result)
                continue
            verdict, text = _verdict(code, reply, "rcpt", host, rules)
            if verdict.reason == "too_many_recipients":
                # RFC 5321 §4.5.3.1.10: send the rest in a new transaction.
                for r in results[i:]:
                    r.rebatch, r.verdict, r.text = True, verdict, text
                break
            result.verdict, result.text = verdict, text
            if code == 421:
                self.close(polite=False)
                fail_all(verdict, text, results[i + 1 :] + accepted)
                return results
        if not accepted:
            self._reset()
            return results

        # --- DATA, the message, and the reply after the final dot
        try:
            self._arm(conn)
            code, reply = conn.docmd("data")  # spelt as smtplib's own data() does
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.close(polite=False)
            fail_all(_lost(exc, "data", rules), str(exc), accepted)
            return results
        if code != 354 and (code < 400 or code >= 600):
            # Any other positive answer to DATA is no answer to it (a stale reply, a
            # broken server): the body was never sent. Never "delivered" (eleventh
            # review); the connection is abandoned and the recipients tried again.
            self.close(polite=False)
            lost = OSError(f"unexpected reply to DATA: {_reply_text(code, reply)}")
            fail_all(_lost(lost, "data", rules), str(lost), accepted)
            return results
        if code != 354:
            verdict, text = _verdict(code, reply, "data", host, rules)
            fail_all(verdict, text, accepted)
            self._after_failure(code)
            return results
        try:
            self._arm(conn)
            conn.send(message.wire_data)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # The final dot did not get through: nothing can have been accepted.
            self.close(polite=False)
            fail_all(_lost(exc, "data", rules), str(exc), accepted)
            return results
        sock = conn.sock
        try:
            if sock is not None:
                # Measured now, after the data went out: in a request, what is left of
                # the deadline (a cut here is ambiguous); else the whole RFC 5321 wait.
                eod = self.settings.end_of_data_timeout
                if self.settings.end_of_data_within_deadline:
                    eod = self.settings.wait_for(eod)
                else:  # the whole RFC 5321 wait, not the request's deadline
                    _set_reply_deadline(conn, None)
                sock.settimeout(eod)
            code, reply = conn.getreply()
            _check_reply_class(code, reply)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # RFC 5321 §4.5.3.2.6, §6.1: after the final dot the server may have taken
            # the message. Ambiguous: never retried inline.
            self.close(polite=False)
            verdict = _lost(exc, "end_of_data", rules)
            for r in accepted:
                r.verdict, r.text, r.ambiguous = verdict, str(exc), True
            return results
        finally:
            if conn.sock is not None:
                conn.sock.settimeout(self.settings.timeout)
        verdict, text = _verdict(code, reply, "end_of_data", host, rules)
        fail_all(verdict, text, accepted)
        if not 200 <= code < 300:
            self._after_failure(code)
        return results

    def _after_failure(self, code: int) -> None:
        if code == 421:
            self.close(polite=False)  # RFC 5321 §3.8: the server is closing the channel
        else:
            self._reset()

    def _reset(self) -> None:
        conn = self.connection
        if conn is None:
            return
        try:
            code, _ = conn.rset()
        except (smtplib.SMTPException, OSError):
            code = 0
        if code != 250:
            self.close(polite=False)


def _command(
    conn: smtplib.SMTP, verb: str, argument: str, options: Sequence[str]
) -> tuple[int, bytes]:
    """``MAIL``/``RCPT`` as smtplib's ``mail()``/``rcpt()`` send them (lower-case verb,
    ESMTP options only when the server speaks ESMTP), for an already valid address."""
    extra = " " + " ".join(options) if options and conn.does_esmtp else ""
    if "SMTPUTF8" in options:
        conn.command_encoding = "utf-8"  # RFC 6531: the commands may carry UTF-8 now
    conn.putcmd(verb, argument + extra)
    return conn.getreply()


class _StaleConnectionError(Exception):
    """A reused connection was found closed before MAIL FROM."""
