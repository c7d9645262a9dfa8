"""Parse an SMTP reply, or a diagnostic text quoting one, into its parts.

Pure and total: any str or bytes gives a :class:`ParsedReply`; nothing here raises on
garbage (DESIGN.md §2 rule 5). The cost is bounded structurally: at most
:data:`MAX_SCAN` characters are examined and no pattern has nested quantifiers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ._errors import InvalidInputError
from ._vocab import Stage

#: Characters (or bytes) of a reply that are examined; the rest is ignored. Real replies
#: are a few hundred characters; DSN diagnostics rarely exceed 2 KB.
MAX_SCAN: Final = 8192

# A reply line as a server sends it: "550-5.7.1 text" or "550 text" or just "421".
_LINE_CODE = re.compile(r"[ \t]*([2-5][0-9][0-9])(?:[ \t-]|$)")
# RFC 3463 enhanced status at the start of the text: class.subject.detail (1-3 digits
# each). qmail writes it as "#5.1.1".
_LEADING_STATUS = re.compile(r"[ \t]*#?([245])\.([0-9]{1,3})\.([0-9]{1,3})(?![0-9.])")
# An enhanced status anywhere (not inside an IP address or a version number).
_ANY_STATUS = re.compile(r"(?<![\w.])#?([245])\.([0-9]{1,3})\.([0-9]{1,3})(?![\w.]|\.[0-9])")
# A reply code quoted inside prose, optionally followed by its enhanced status.
_QUOTED_CODE = re.compile(
    r"(?<![\w./=#@-])([2-5][0-9][0-9])(?:[ -]|:? |[,;]|$)"
    r"(?:[ -]*#?([245])\.([0-9]{1,3})\.([0-9]{1,3})(?![0-9.]))?"
)
# Where relays put the remote reply in their diagnostics ("host x[1.2.3.4] said: 550 ...").
_SAID = re.compile(
    r"(?:said|replied|returned|responded|response was|reason|error|technical report"
    r"|diagnostic-code|error_code|smtp)\s*[:;]\s*['\"]?(?:smtp\s*;\s*)?",
    re.IGNORECASE,
)
# Postfix "(in reply to RCPT TO command)", Exim "after RCPT TO:<x>", transcripts.
_STAGE_HINT = re.compile(
    r"in reply to (rcpt to|mail from|end of data|data|ehlo|helo|starttls|auth|quit)\b"
    r"|after (?:pipelined )?"
    r"(rcpt to|mail from|end of data|data|initial connection|ehlo|helo|starttls)\b"
    r"|>>> (rcpt to|mail from|data)\b"
    r"|did not like our (rcpt to|mail from)"
    r"|(does not like recipient|all rcpt commands were rejected|no valid recipients)"
    r"|smtp:(rcpt|mail) host",
    re.IGNORECASE,
)
_STAGE_WORDS: Final[dict[str, Stage]] = {
    "rcpt to": "rcpt",
    "rcpt": "rcpt",
    "does not like recipient": "rcpt",
    "all rcpt commands were rejected": "rcpt",
    "no valid recipients": "rcpt",
    "mail from": "mail",
    "mail": "mail",
    "end of data": "end_of_data",
    "data": "data",
    "ehlo": "ehlo",
    "helo": "ehlo",
    "initial connection": "greeting",
    "starttls": "starttls",
    "auth": "auth",
    "quit": "quit",
}
# Postfix "host mx.example.org[192.0.2.4] said", Exim "host mx.example.org [192.0.2.4]:".
_HOST_HINT = re.compile(r"\bhost ([a-z0-9][a-z0-9.-]{0,252}) ?\[", re.IGNORECASE)
# "try again in 300 seconds", "retry after 5 minutes", "come back in 15 min".
_RETRY_AFTER = re.compile(
    r"(?:try|retry|come back|wait|again)[^0-9.;]{0,30}?([0-9]{1,7})\s*"
    r"(seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h)\b"
)
_UNIT_SECONDS: Final[dict[str, int]] = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ParsedReply:
    """What a reply says, before any judgement.

    ``code`` is the basic reply code (None when the text holds none), ``status`` the
    RFC 3463 enhanced code as written (never invented), ``text`` the (truncated) input
    as one string, ``lowered`` its lower-case form for phrase matching, ``stage`` and
    ``host`` what the text itself says about where the reply came from.
    """

    code: int | None
    status: str | None
    text: str
    lowered: str
    stage: Stage | None
    host: str | None
    retry_after: int | None


def to_text(reply: str | bytes | bytearray | memoryview) -> str:
    """The reply as str, truncated to :data:`MAX_SCAN`; bytes are decoded as UTF-8 with
    replacement (servers are not bound to any charset before SMTPUTF8)."""
    if isinstance(reply, str):
        return reply[:MAX_SCAN]
    if isinstance(reply, bytes | bytearray | memoryview):
        return bytes(reply[:MAX_SCAN]).decode("utf-8", "replace")
    raise InvalidInputError(f"an SMTP reply must be str or bytes, not {type(reply).__name__}")


def _status(m: re.Match[str], first: int) -> str:
    return f"{m.group(first)}.{int(m.group(first + 1))}.{int(m.group(first + 2))}"


def parse_reply(reply: str | bytes | bytearray | memoryview) -> ParsedReply:
    """Split a reply (or a diagnostic quoting one) into code, status, stage and host."""
    text = to_text(reply)
    lowered = text.lower()
    code: int | None = None
    status: str | None = None

    m = _LINE_CODE.match(text)
    if m is not None:
        # An SMTP reply as sent: every line carries the code; RFC 2034 puts the enhanced
        # status at the start of each line's text. The first line is the server's own
        # (later ones may be a relay's transcript of follow-on commands such as 503).
        code = int(m.group(1))
        s = _LEADING_STATUS.match(text, m.end())
        if s is not None:
            status = _status(s, 1)
    else:
        # Prose: find the quoted reply, preferring the place a relay says it put it.
        start = 0
        said = _SAID.search(text)
        if said is not None:
            q = _QUOTED_CODE.match(text, said.end())
            if q is not None:
                start = said.end()
        q = _QUOTED_CODE.search(text, start)
        if q is not None:
            code = int(q.group(1))
            if q.group(2) is not None:
                status = _status(q, 2)
    if status is None:
        s = _ANY_STATUS.search(text)
        if s is not None:
            status = _status(s, 1)

    stage: Stage | None = None
    h = _STAGE_HINT.search(text)
    if h is not None:
        word = next(g for g in h.groups() if g is not None).lower()
        stage = _STAGE_WORDS.get(word)

    host_match = _HOST_HINT.search(text)
    host = host_match.group(1).lower().rstrip(".") if host_match is not None else None

    retry_after: int | None = None
    r = _RETRY_AFTER.search(lowered)
    if r is not None:
        retry_after = int(r.group(1)) * _UNIT_SECONDS[r.group(2)]

    return ParsedReply(
        code=code,
        status=status,
        text=text,
        lowered=lowered,
        stage=stage,
        host=host,
        retry_after=retry_after,
    )
