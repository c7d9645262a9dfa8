"""What the test server saw: messages, the command/reply transcript, AUTH attempts."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy

from ._script import ServerStage


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One message whose data the server received completely (up to the final dot).

    ``data`` is the message as the recipient would get it: the bytes exactly as they
    arrived, with only the transparency dots of RFC 5321 §4.5.2 removed (no CRLF or charset
    normalisation: a bare LF stays a bare LF). ``wire_data`` is the same before removing
    those dots (what crossed the wire between ``354`` and the terminating ``.``), to check
    dot-stuffing. ``reply`` is what the server answered after the final dot, or None when
    it closed the connection without answering (``dropped``: a scripted :data:`DROP`, or
    the client or the server went away during a :class:`Delay`) — an ambiguous delivery
    from the client's point of view.
    """

    connection_id: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...]
    rcpt_options: tuple[str, ...]
    data: bytes
    wire_data: bytes
    tls: bool
    auth_login: str | None
    smtputf8: bool
    reply: str | None
    dropped: bool

    @property
    def accepted(self) -> bool:
        """The server answered the final dot with 2xx."""
        return self.reply is not None and self.reply.startswith("2")

    def parsed(self) -> EmailMessage:
        """``data`` parsed with the modern ``email`` policy."""
        return BytesParser(_class=EmailMessage, policy=default_policy).parsebytes(self.data)


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """One step of the transcript: what the client sent and what the server answered.

    ``command`` is the command line without its line ending (empty for the greeting, ``.``
    for the end of data; an AUTH payload is replaced by ``***``). ``reply`` holds the reply
    lines as sent, joined with ``\\n`` (AUTH ``334`` challenges left out), or None when the
    server closed the connection without answering.
    """

    connection_id: int
    stage: ServerStage | None
    command: str
    reply: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthAttempt:
    """A credential check (the password is never recorded)."""

    connection_id: int
    mechanism: str
    login: str
    success: bool
    tls: bool


# "RCPT TO:<a@x> ..." or, from lax clients the server accepts too, "RCPT TO:a@x".
_RCPT_ADDRESS = re.compile(r"TO:\s*(?:<([^>]*)>|([^\s<>]+))", re.IGNORECASE)


def _address_key(address: str) -> str:
    return address.strip().strip("<>").casefold()


class Recorder:
    """The thread-safe store behind the server's recording properties."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.messages: list[Message] = []
        self.transcript: list[Exchange] = []
        self.auth_attempts: list[AuthAttempt] = []
        self.errors: list[BaseException] = []
        self.connections = 0
        # Never reset: a connection open across reset() keeps an id no later one gets, and
        # a command in flight at reset() refers to an entry by a number that stays unique.
        self._last_connection_id = 0
        self._cleared = 0  # transcript entries forgotten by clear()

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self._cleared += len(self.transcript)
            self.transcript.clear()
            self.auth_attempts.clear()
            self.errors.clear()
            self.connections = 0

    # server side -------------------------------------------------------------------------
    def new_connection(self) -> int:
        with self._changed:
            self.connections += 1
            self._last_connection_id += 1
            self._changed.notify_all()
            return self._last_connection_id

    def begin(self, connection_id: int, stage: ServerStage | None, command: str) -> int:
        """Record a command; returns its entry's number for :meth:`add_reply_line`."""
        with self._changed:
            self.transcript.append(
                Exchange(connection_id=connection_id, stage=stage, command=command, reply=None)
            )
            self._changed.notify_all()
            return self._cleared + len(self.transcript) - 1

    def add_reply_line(self, index: int, line: str) -> None:
        with self._changed:
            position = index - self._cleared
            if position < 0:
                return  # the command was recorded before a reset(): forgotten with it
            entry = self.transcript[position]
            text = line if entry.reply is None else f"{entry.reply}\n{line}"
            self.transcript[position] = replace(entry, reply=text)
            self._changed.notify_all()

    def add_message(self, message: Message) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    def add_auth_attempt(self, attempt: AuthAttempt) -> None:
        with self._changed:
            self.auth_attempts.append(attempt)
            self._changed.notify_all()

    def add_error(self, error: BaseException) -> None:
        with self._changed:
            self.errors.append(error)
            self._changed.notify_all()

    # test side ---------------------------------------------------------------------------
    def wait_for_messages(self, count: int, timeout: float) -> list[Message]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(
                    f"the test SMTP server received {len(self.messages)} message(s), "
                    f"not {count}, within {timeout} s"
                )
            return list(self.messages)

    def snapshot_messages(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def snapshot_transcript(self) -> list[Exchange]:
        with self._lock:
            return list(self.transcript)

    def snapshot_auth(self) -> list[AuthAttempt]:
        with self._lock:
            return list(self.auth_attempts)

    def snapshot_errors(self) -> list[BaseException]:
        with self._lock:
            return list(self.errors)

    def rcpt_addresses(self) -> list[str]:
        with self._lock:
            found = []
            for entry in self.transcript:
                if entry.stage == "rcpt":
                    match = _RCPT_ADDRESS.search(entry.command)
                    if match is None:
                        found.append(entry.command)
                    else:
                        found.append(match.group(1) if match.group(2) is None else match.group(2))
            return found

    def delivered_to(self, address: str, *, include_dropped: bool) -> int:
        key = _address_key(address)
        with self._lock:
            return sum(
                1
                for message in self.messages
                if (message.accepted or (include_dropped and message.dropped))
                and key in {_address_key(rcpt) for rcpt in message.rcpt_tos}
            )
