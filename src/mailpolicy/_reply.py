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
_LINE_CODE = re.compile(r"[ \t]*([2-5][0-9][0-9])(?:[ \t-]|(?=[\r\n])|$)")
# RFC 3463 enhanced status at the start of the text: class.subject.detail (1-3 digits
# each). qmail writes it as "#5.1.1".
_LEADING_STATUS = re.compile(r"[ \t]*#?([245])\.([0-9]{1,3})\.([0-9]{1,3})(?![0-9.])")
# An enhanced status or a reply code anywhere. Each pattern starts with a character class
# so the regex engine can skip ahead quickly, and checks its boundaries (not inside an IP
# address, a version number, a host name, a URL) with lookbehinds placed after the
# digits, so the scan stays in C: a status is not next to a word character or a dot (nor
# after "x#", qmail's "#5.1.1" is fine); a code is not after a word character or any of
# "./=#@-", and is followed by a separator (" ", "-", ",", ";", ": ") or the end.
_STATUS_ANY = re.compile(
    r"([245])(?<![\w.][245])(?<![\w.]#[245])\.([0-9]{1,3})\.([0-9]{1,3})(?![\w.])"
)
_CODE_ANY = re.compile(r"[2-5][0-9][0-9](?<![\w./=#@-][2-5][0-9][0-9])(?=[ ,;-]|:?\Z|: )")
# After a quoted code: its enhanced status, if any.
_STATUS_AFTER_CODE = re.compile(r"[ -]*#?([245])\.([0-9]{1,3})\.([0-9]{1,3})(?![0-9.])")
_FAILURE_CODE = re.compile(r"[45][0-9][0-9]")
_IPV6_CHARS: Final = frozenset("0123456789abcdefABCDEF:.")
#: Replies that are never a verdict on a message: the greeting and DATA's go-ahead.
_NOT_A_VERDICT: Final = frozenset({220, 354})
# Where relays put the remote reply in their diagnostics ("host x[1.2.3.4] said: 550 ...",
# "Diagnostic-Code: smtp; 550 ..."): literal anchors found with str.find (fast), then
# the separator and an optional "smtp;" skipped.
_SAID_ANCHORS: Final = (
    "said", "replied", "returned", "responded", "response was", "reason", "error",
    "technical report", "diagnostic-code", "error_code", "smtp",
)  # fmt: skip
_SEPARATOR = re.compile(r"[:;]")
_AFTER_ANCHOR = re.compile(r"[ \t]*[:;][ \t]*['\"]?(?:smtp[ \t]*;[ \t]*)?")
# Phrases that name the step by themselves: qmail-remote's own words (qmail-remote.c),
# Postfix's "refused to talk to me" when the greeting is not 2xx (smtp_helo.c), and
# statements that every RCPT was refused.
_PHRASE_STAGES: Final[dict[str, Stage]] = {
    "does not like recipient": "rcpt",
    "all rcpt commands were rejected": "rcpt",
    "no valid recipients": "rcpt",
    "refused to talk to me": "greeting",
    "failed after i sent the message": "end_of_data",
    "but sender was rejected": "mail",
    "but greeting failed": "greeting",
    "but my name was rejected": "ehlo",
    "wasn't able to establish an smtp connection": "connect",
}
# Where the text names the command a reply answered: Postfix "(in reply to RCPT TO
# command)", Exim "after RCPT TO:<x>", transcripts (">>> RCPT TO"), qmail, Sendmail,
# then the phrases above. Each literal anchor is looked up with str.find and its pattern
# (empty for the phrases) matched right there.
_NOTHING_MORE = re.compile(r"")
_STAGE_ANCHORS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    ("in reply to ", re.compile(
        r"(rcpt to|mail from|end of data|data|ehlo|helo|starttls|auth|quit)\b")),
    ("after ", re.compile(
        r"(?:pipelined )?"
        r"(rcpt to|mail from|end of data|data|initial connection|ehlo|helo|starttls)\b")),
    (">>> ", re.compile(r"(rcpt to|mail from|data)\b")),
    ("did not like our ", re.compile(r"(rcpt to|mail from)")),
    ("smtp:", re.compile(r"(rcpt|mail) host")),
    *((phrase, _NOTHING_MORE) for phrase in _PHRASE_STAGES),
)  # fmt: skip
#: Anchors that say every RCPT was refused: a transcript's statement about the reply
#: before it, or the reply to DATA itself.
_REFUSED_ALL_ANCHORS: Final = frozenset({"all rcpt commands were rejected", "no valid recipients"})
_STAGE_WORDS: Final[dict[str, Stage]] = {
    "rcpt to": "rcpt",
    "rcpt": "rcpt",
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
    **_PHRASE_STAGES,
}
# Postfix "host mx.example.org[192.0.2.4] said", Exim "host mx.example.org [192.0.2.4]:".
_HOST_HINT = re.compile(r"\bhost ([a-z0-9][a-z0-9.-]{0,252}) ?\[")
# "try again in 300 seconds", "retry after 5 minutes", "come back in 15 min".
_RETRY_WORDS_ANY: Final = ("try", "again", "wait", "back in")
_RETRY_AFTER = re.compile(
    r"(?:try|retry|come back|wait|again)[^0-9.;]{0,30}?([0-9]{1,7})\s*"
    r"(seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h)\b"
)
_UNIT_SECONDS: Final[dict[str, int]] = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
}  # fmt: skip


@dataclass(slots=True)
class ParsedReply:
    """What a reply says, before any judgement (internal; read-only by convention: not
    frozen because a frozen dataclass's ``__init__`` costs a tenth of a verdict).

    ``code`` is the basic reply code (None when the text holds none), ``status`` the
    RFC 3463 enhanced code as written (never invented), ``text`` the (truncated) input
    as one string, ``lowered`` its lower-case form for phrase matching, ``stage`` what the
    text itself says about the command the reply answered. The host and an announced
    delay are read on demand (:meth:`host_hint`, :meth:`retry_after`): most verdicts need
    neither.
    """

    code: int | None
    status: str | None
    text: str
    lowered: str
    stage: Stage | None

    def host_hint(self) -> str | None:
        """The reporting host named in a relay's diagnostic, if any."""
        if "host " not in self.lowered:
            return None
        m = _HOST_HINT.search(self.lowered)
        return None if m is None else m.group(1).rstrip(".")

    def retry_after(self) -> int | None:
        """The delay the server announced ("try again in 300 seconds"), in seconds."""
        lowered = self.lowered
        if not any(w in lowered for w in _RETRY_WORDS_ANY):
            return None
        m = _RETRY_AFTER.search(lowered)
        return None if m is None else int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


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


def _find_status(text: str) -> str | None:
    """The first enhanced status in ``text`` that is not part of a longer dotted or
    alphanumeric token (an IP address, a version number)."""
    m = _STATUS_ANY.search(text)
    return None if m is None else _status(m, 1)


def _find_code(
    text: str, start: int = 0, *, anchored: bool = False
) -> tuple[int, str | None, int] | None:
    """The first reply code quoted in prose at or after ``start`` (exactly at ``start``
    when ``anchored``), with the enhanced status that follows it, if any, and where the
    code ends."""
    if anchored:
        m = _CODE_ANY.match(text, start)
        if m is None or (start and text[start - 1] == ":" and _in_ipv6_literal(text, start)):
            return None
    else:
        for m in _CODE_ANY.finditer(text, start):
            begin = m.start()
            if not (begin and text[begin - 1] == ":" and _in_ipv6_literal(text, begin)):
                break
        else:
            return None
    end = m.end()
    s = _STATUS_AFTER_CODE.match(text, end + (text[end : end + 1] == ":"))
    return int(m.group()), (_status(s, 1) if s is not None else None), end


def _in_ipv6_literal(text: str, begin: int) -> bool:
    """Whether the digits at ``begin`` end an IPv6 address ("2001:db8::450"), not a code
    quoted after a colon ("RCPT TO:501 5.1.3")."""
    start = begin
    while start > max(0, begin - 40) and text[start - 1] in _IPV6_CHARS:
        start -= 1
    return text.count(":", start, begin) >= 2


def _find_failure_code(text: str, start: int) -> tuple[int, str | None, int] | None:
    """The first 4xx/5xx reply at or after ``start`` that is unmistakably one: a code
    that starts a line, or one followed by an enhanced status ("ready 450 connections",
    "(max 500 KB)" and "500 Main Street" are not replies)."""
    for m in _FAILURE_CODE.finditer(text, start):
        begin = m.start()
        found = _find_code(text, begin, anchored=True)
        if found is not None and (found[1] is not None or text[begin - 1] in "\r\n"):
            return found
    return None


def _count_codes(text: str, end: int) -> int:
    """How many reply codes (0, 1 or "2 or more") are quoted before ``end``."""
    before = text[:end]
    n, pos = 0, 0
    while n < 2:
        found = _find_code(before, pos)
        if found is None:
            break
        n, pos = n + 1, found[2]
    return n


# The code and enhanced status that start each continuation line of a multi-line reply
# (RFC 5321 §4.2.1; RFC 2034 repeats the status on every line). smtplib strips the codes
# and keeps the statuses, so a reply read by the sender has lines starting "4.2.1 ".
_CONTINUATION = re.compile(
    r"\n[ \t]*(?:([2-5][0-9][0-9])(?:[ -]|(?=[\r\n]|\Z)))?"
    r"[ \t]*(?:#?([245]\.[0-9]{1,3}\.[0-9]{1,3})(?![0-9.]))?"
)


def _continuation_prefixes_removed(lowered: str, code: str, status: str | None) -> str:
    """``lowered`` with the prefix of each continuation line (the first line's code, its
    status, or both) replaced by a space. A line with another code is a relay's
    transcript ("503 need RCPT" after the reply): it stays as it is."""

    def strip(m: re.Match[str]) -> str:
        line_code, line_status = m.group(1), m.group(2)
        if line_code is not None and line_code != code:
            return m.group(0)
        if line_code is None and (line_status is None or line_status != status):
            return m.group(0)
        return "\n "

    return _CONTINUATION.sub(strip, lowered)


def _repeats_removed(lowered: str, code: int | None, status: str) -> str:
    """``lowered`` with every occurrence but the first of ``status`` (and the ``code``
    written before it) replaced by a space."""
    prefix = "" if code is None else f"(?:{code}[ -]+)?"
    pattern = re.compile(rf"(?<![\w.]){prefix}#?{re.escape(status)}(?![\w.])")
    first = pattern.search(lowered)
    if first is None:
        return lowered
    end = first.end()
    return lowered[:end] + pattern.sub(" ", lowered[end:])


def parse_reply(
    reply: str | bytes | bytearray | memoryview, *, want_stage: bool = True
) -> ParsedReply:
    """Split a reply (or a diagnostic quoting one) into code, status and stage.

    ``want_stage`` False skips looking for a stage the caller already knows. Searches
    run on the lower-cased text (case-insensitive patterns are slower)."""
    text = to_text(reply)
    lowered = text.lower()
    code: int | None = None
    status: str | None = None
    code_end = 0  # where the code just found ends

    m = _LINE_CODE.match(text)
    if m is not None:
        # An SMTP reply as sent: every line carries the code; RFC 2034 puts the enhanced
        # status at the start of each line's text. The first line is the server's own
        # (later ones may be a relay's transcript of follow-on commands such as 503).
        code, code_end = int(m.group(1)), m.end()
        s = _LEADING_STATUS.match(text, code_end)
        if s is not None:
            status = _status(s, 1)
        if "\n" in lowered:
            # Phrases run across lines ("...receiving mail at a rate that\r\n450-4.2.1
            # prevents additional messages..."): the words matched must not include the
            # code and status that repeat at the start of every continuation line.
            written = None if s is None else s.group(0).strip(" \t#")
            lowered = _continuation_prefixes_removed(lowered, m.group(1), written)
    else:
        # Prose: find the quoted reply, preferring the place a relay says it put it.
        found = None
        for colon in _SEPARATOR.finditer(lowered):
            # A ":" or ";" right after an anchor word ("said:", "Diagnostic-Code: smtp;")
            end = colon.start()
            while end and lowered[end - 1] in " \t":
                end -= 1
            if lowered.endswith(_SAID_ANCHORS, 0, end):
                after = _AFTER_ANCHOR.match(lowered, colon.start())
                if after is not None:
                    found = _find_code(lowered, after.end(), anchored=True)
                    if found is not None:
                        break
        if found is None:
            found = _find_code(lowered)
        if found is not None:
            code, status, code_end = found
    if code in _NOT_A_VERDICT:
        # A greeting or "354 go ahead" is never a verdict on a message: in a relay's
        # transcript ("354 End data with <CR><LF>.<CR><LF> 451 4.3.0 queue file write
        # error", "refused to talk to me: 220-laposte 421 4.2.1 Service refuse") the
        # failure follows it.
        later = _find_failure_code(lowered, code_end)
        if later is not None:
            code, status, _ = later
    if status is None:
        status = _find_status(text)

    if status is not None and lowered.count(status) > 1:
        # The same reply flattened onto one line (a DSN's Diagnostic-Code, Postfix's
        # "said: 450-4.2.1 ... 450-4.2.1 ..."): the repeated status, with its code,
        # interrupts phrases that run across the original lines. Only the first stays.
        lowered = _repeats_removed(lowered, code, status)

    stage: Stage | None = None
    if want_stage:
        best = len(lowered) + 1
        for anchor, pattern in _STAGE_ANCHORS:
            pos = lowered.find(anchor)
            if pos == -1 or pos >= best:
                continue
            h = pattern.match(lowered, pos + len(anchor))
            if h is not None:
                best = pos
                stage = _STAGE_WORDS[h.group(1) if h.groups() else anchor]
                if anchor in _REFUSED_ALL_ANCHORS and _count_codes(lowered, pos) == 1:
                    # "554 5.5.1 Error: no valid recipients" is itself the reply to DATA;
                    # after an earlier reply in a transcript ("550 User unknown 554 Error:
                    # no valid recipients") it says that reply answered RCPT.
                    stage = "data"

    return ParsedReply(
        code=code,
        status=status,
        text=text,
        lowered=lowered,
        stage=stage,
    )
