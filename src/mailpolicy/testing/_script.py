"""What the test server answers: scripted replies per stage, consumed in order."""

from __future__ import annotations

import enum
import re
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, get_args

#: The points of an SMTP session a reply can be scripted for. The names are the library's
#: stage vocabulary (DESIGN.md §2) plus ``helo``, ``rset`` and ``noop``.
ServerStage = Literal[
    "greeting",
    "ehlo",
    "helo",
    "starttls",
    "auth",
    "mail",
    "rcpt",
    "data",
    "end_of_data",
    "rset",
    "noop",
    "quit",
]
SERVER_STAGES: Final[tuple[ServerStage, ...]] = get_args(ServerStage)


class Action(enum.Enum):
    """Special script entries (use the module constants :data:`DROP` and :data:`DEFAULT`)."""

    DROP = "drop"
    DEFAULT = "default"

    def __repr__(self) -> str:
        return self.name


#: Close the connection at this stage without sending any reply.
DROP: Final = Action.DROP
#: Behave normally at this occurrence (use it to skip an occurrence in a sequence).
DEFAULT: Final = Action.DEFAULT


@dataclass(frozen=True, slots=True)
class Delay:
    """Wait ``seconds`` before acting, then answer with ``then`` (a reply, :data:`DROP` or
    :data:`DEFAULT`). The wait ends early when the client disconnects or the server stops."""

    seconds: float
    then: str | Action = Action.DEFAULT

    def __post_init__(self) -> None:
        if not self.seconds >= 0:
            raise ValueError(f"Delay needs a duration >= 0 seconds, got {self.seconds!r}")
        if isinstance(self.then, str):
            format_reply(self.then)  # fail early, in the test's thread, on a bad reply
        elif not isinstance(self.then, Action):
            raise TypeError(
                f"Delay's then must be a reply, DROP or DEFAULT, not {type(self.then).__name__}"
            )


#: One entry of a script: a reply text, :data:`DROP`, :data:`DEFAULT` or a :class:`Delay`.
Scripted: TypeAlias = str | Action | Delay

_FIRST_LINE = re.compile(r"([2-5][0-9][0-9])(?:[ -]|$)")


def format_reply(reply: str) -> list[str]:
    """The reply lines to send for a scripted reply text, without line endings.

    A single line is sent exactly as given. Text with ``\\n`` (or ``\\r\\n``) becomes a
    multi-line reply: every line but the last gets ``NNN-``, the last ``NNN ``, with NNN
    taken from the first line. A later line that already starts with the same code and a
    space or hyphen is re-framed rather than prefixed twice, so ``"550-a\\n550 b"`` and
    ``"550 a\\nb"`` both go out as ``550-a`` / ``550 b``.
    """
    lines = reply.replace("\r\n", "\n").split("\n")
    match = _FIRST_LINE.match(lines[0])
    if match is None:
        raise ValueError(f"a scripted reply must start with a 2xx-5xx code: {reply!r}")
    if any("\r" in line for line in lines):
        raise ValueError(f"a scripted reply may not contain a bare CR: {reply!r}")
    if len(lines) == 1:
        return lines
    code = match.group(1)
    texts = [lines[0][4:]]
    for line in lines[1:]:
        if line.startswith(code) and line[3:4] in {" ", "-", ""}:
            texts.append(line[4:])
        else:
            texts.append(line)
    framed = [f"{code}-{text}" for text in texts[:-1]]
    framed.append(f"{code} {texts[-1]}" if texts[-1] else code)
    return framed


def _check(entries: tuple[Scripted, ...]) -> tuple[Scripted, ...]:
    for entry in entries:
        if isinstance(entry, str):
            format_reply(entry)
        elif not isinstance(entry, Action | Delay):
            raise TypeError(f"not a script entry: {entry!r}")
    return entries


def _address_key(address: str) -> str:
    return address.strip().strip("<>").casefold()


class Script:
    """The replies a :class:`SMTPTestServer` will give, per stage, in order of occurrence.

    Every call appends to a queue; each occurrence of the stage (each connection for
    ``greeting``, each command otherwise) takes the next entry, and once a queue is empty
    the server behaves normally. Safe to change from the test's thread while the server
    runs. Each method returns the script, so calls chain.

    Negative replies (4xx/5xx) are sent instead of processing the command, and a ``421``
    also closes the connection, as real servers do. A positive scripted reply (2xx/3xx)
    does not force anything: the command is processed normally and the scripted text
    replaces the server's own positive reply (so ``ehlo("250-mx\\n250 SIZE 10")`` replaces
    the whole capability list, and a refused command still gets the refusal).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[ServerStage, deque[Scripted]] = {}
        self._per_recipient: dict[str, deque[Scripted]] = {}

    def on(self, stage: ServerStage, *replies: Scripted) -> Script:
        """Append replies for any stage (the named methods below are shorthands)."""
        if stage not in SERVER_STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {', '.join(SERVER_STAGES)}")
        _check(replies)
        with self._lock:
            self._queues.setdefault(stage, deque()).extend(replies)
        return self

    def greeting(self, *replies: Scripted) -> Script:
        """Greeting per connection, e.g. ``greeting("421 4.3.2 Try later")``."""
        return self.on("greeting", *replies)

    def ehlo(self, *replies: Scripted) -> Script:
        return self.on("ehlo", *replies)

    def starttls(self, *replies: Scripted) -> Script:
        return self.on("starttls", *replies)

    def auth(self, *replies: Scripted) -> Script:
        return self.on("auth", *replies)

    def mail(self, *replies: Scripted) -> Script:
        return self.on("mail", *replies)

    def rcpt(self, *entries: str | Scripted) -> Script:
        """Replies to RCPT TO. If the first argument is an address (it does not start with
        a reply code), the replies apply to RCPTs naming that address only (compared
        case-insensitively), and take precedence over the replies for any recipient::

            script.rcpt("ann@example.org", "450 4.2.0 Greylisted", "250 2.1.5 Ok")
            script.rcpt("250 2.1.5 Ok", "452 4.5.3 Too many recipients")
        """
        if entries and isinstance(entries[0], str) and not _FIRST_LINE.match(entries[0]):
            address, replies = entries[0], entries[1:]
            if "@" not in address:
                raise ValueError(f"neither a reply nor an address: {address!r}")
            _check(replies)
            with self._lock:
                self._per_recipient.setdefault(_address_key(address), deque()).extend(replies)
            return self
        return self.on("rcpt", *entries)

    def data(self, *replies: Scripted) -> Script:
        """Replies to the DATA command itself (normally ``354``)."""
        return self.on("data", *replies)

    def end_of_data(self, *replies: Scripted) -> Script:
        """Replies after the final dot, one per message."""
        return self.on("end_of_data", *replies)

    def quit(self, *replies: Scripted) -> Script:
        return self.on("quit", *replies)

    def helo(self, *replies: Scripted) -> Script:
        return self.on("helo", *replies)

    def rset(self, *replies: Scripted) -> Script:
        return self.on("rset", *replies)

    def noop(self, *replies: Scripted) -> Script:
        return self.on("noop", *replies)

    def clear(self) -> None:
        """Forget every scripted reply not yet used."""
        with self._lock:
            self._queues.clear()
            self._per_recipient.clear()

    def unused(self) -> Mapping[str, tuple[Scripted, ...]]:
        """The entries not consumed yet, by stage (``"rcpt <address>"`` for per-recipient
        ones): handy to assert that a test exercised everything it scripted."""
        with self._lock:
            left: dict[str, tuple[Scripted, ...]] = {
                stage: tuple(queue) for stage, queue in self._queues.items() if queue
            }
            for address, queue in self._per_recipient.items():
                if queue:
                    left[f"rcpt {address}"] = tuple(queue)
            return left

    def next(self, stage: ServerStage, recipient: str | None = None) -> Scripted:
        """Consume the entry for one occurrence of ``stage`` (server side)."""
        with self._lock:
            if recipient is not None:
                queue = self._per_recipient.get(_address_key(recipient))
                if queue:
                    return queue.popleft()
            queue = self._queues.get(stage)
            if queue:
                return queue.popleft()
            return Action.DEFAULT
