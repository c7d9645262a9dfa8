"""Structured events (DESIGN.md §5): one ``mail.delivery`` per recipient per ``send()``,
one ``mail.attempt`` per SMTP attempt at debug level.

Events go through structlog's global configuration, looked up at each call (so an
application's ``structlog.configure`` and ``structlog.testing.capture_logs()`` see them);
while structlog is not configured, through the standard library's ``mailpolicy`` logger.
Recipients are masked by default; passwords never appear.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
import unicodedata
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final, Literal

import structlog

from ._store import normalise_address

if TYPE_CHECKING:
    from ._outcome import RecipientOutcome

RecipientStyle = Literal["mask", "full", "hash"]
RECIPIENT_STYLES: Final[tuple[RecipientStyle, ...]] = ("mask", "full", "hash")

LOGGER_NAME: Final = "mailpolicy"

#: Log level of ``mail.delivery`` by state: a held message is our configuration's fault
#: and must alert the operator.
_LEVEL: Final[dict[str, str]] = {
    "delivered": "info",
    "deferred": "warning",
    "bounced": "warning",
    "invalid": "warning",
    "suppressed": "info",
    "held": "error",
}


def show_recipient(address: str, style: RecipientStyle) -> str:
    """The recipient as events show it: ``b***@example.org`` (mask), the address (full),
    or a stable digest with the domain (hash), so logs can be joined without the
    address itself."""
    if style == "full":
        return address
    local, at, domain = address.rpartition("@")
    if style == "hash":
        # Hashed as the suppression list keys it (lower-cased, the domain as its A-label),
        # in Unicode's composed form and without a trailing dot, so Ann@Example.ORG,
        # ann@example.org, a Unicode domain's two spellings and an NFD local part are
        # one token.
        key = _mailbox_key(address)
        digest = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:16]
        return f"sha256:{digest}@{key.rpartition('@')[2]}" if at else f"sha256:{digest}"
    if not at:  # a mistyped address ("ann.example.org"): no domain to show, mask it all
        return "***"
    return f"{local[:1]}***@{domain}" if local else f"***@{domain}"


def recipient_domain(address: str) -> str | None:
    """The domain events show beside a recipient; None when the text has no ``@`` (it
    would otherwise be the whole, unmasked address)."""
    _, at, domain = address.rpartition("@")
    return domain.lower() if at else None


#: A lazy proxy: it resolves structlog's global configuration when used (so an app's
#: structlog.configure() and structlog.testing.capture_logs() apply), and making it once
#: spares building one per event.
_LOGGER: Final = structlog.get_logger(LOGGER_NAME)
#: Where events go while nobody configured structlog: the standard library's "mailpolicy"
#: logger, as key=value lines. structlog's own default prints every event, debug ones
#: included, to stdout, where it mixes into a program's output; a library should say
#: nothing unless asked. So Django's LOGGING or logging.basicConfig() decide, and with
#: no logging configured at all Python shows warnings and errors on stderr.
_STDLIB: Final = structlog.wrap_logger(
    logging.getLogger(LOGGER_NAME),
    processors=[
        structlog.stdlib.filter_by_level,  # nothing is rendered for a disabled level
        structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=False),
    ],
    wrapper_class=structlog.stdlib.BoundLogger,
)


# structlog's private configuration module, imported once (not per event); None if a
# structlog without it is installed.
try:
    from structlog import _config as _structlog_config
except ImportError:  # pragma: no cover - structlog's layout changed
    _structlog_config = None  # type: ignore[assignment]


def _structlog_configured() -> bool:
    """Whether the application configured structlog: ``is_configured()``, unless the
    configuration is structlog's built-in default again (``capture_logs()`` leaves
    ``is_configured()`` True for good after putting the defaults back). Read from
    structlog's configuration object directly: ``get_config()`` copies it, per event."""
    if not structlog.is_configured():
        return False
    if _structlog_config is None:  # another structlog: trust the flag
        return True
    try:
        config = _structlog_config._CONFIG
        return not (
            config.logger_factory is _structlog_config._BUILTIN_DEFAULT_LOGGER_FACTORY
            and config.default_wrapper_class is _structlog_config._BUILTIN_DEFAULT_WRAPPER_CLASS
            and config.default_processors == _structlog_config._BUILTIN_DEFAULT_PROCESSORS
        )
    except AttributeError:  # another structlog: trust the flag
        return True


def _logger() -> Any:
    return _LOGGER if _structlog_configured() else _STDLIB


_EMITTING: Final = threading.local()


def _log(level: str, event: str, **fields: Any) -> None:
    """Emit one event. A logging failure (a processor that raises, a broken handler or
    sink) is swallowed: an event reports a delivery, it must never change one. Raising
    here would make send() fail after the server accepted the message, or stop the
    worker before it recorded a delivery, and the mail would be sent again.

    Events emitted while an event is being handled (on this thread) are dropped: a
    handler that sends mail itself (Django's AdminEmailHandler on ERROR records, through
    this very backend) would otherwise log a held delivery, mail it, be held again... a
    loop of SMTP attempts until the recursion limit."""
    if getattr(_EMITTING, "active", False):
        return
    _EMITTING.active = True
    try:
        with suppress(Exception):  # whatever the application's logging raises
            getattr(_logger(), level)(event, **fields)
    finally:
        _EMITTING.active = False


def delivery(state: str, **fields: Any) -> None:
    """Emit ``mail.delivery`` at the level its state calls for."""
    _log(_LEVEL.get(state, "info"), "mail.delivery", state=state, **fields)


#: Characters of the server's reply an event carries (the outcome keeps it whole).
MAX_EVENT_TEXT: Final = 300
#: Characters of a reply looked at for the event at all (a 1 MB reply costs no more).
_MAX_SCANNED: Final = 16 * MAX_EVENT_TEXT
#: RFC 5321 §4.5.3.1.1: a local part has at most 64 octets.
_MAX_LOCAL: Final = 64


#: What may make up a local part as servers quote it: RFC 5322 atext and the dot and,
#: beyond ASCII (RFC 6531 allows any character), everything but white space, controls,
#: brackets and quotation marks (the Catalan middle dot, a zero-width joiner, a symbol).
#: Whatever else bounds it.
_LOCAL_PUNCTUATION: Final = frozenset("!#$%&'*+-/=?^_`{|}~.")
_NOT_LOCAL_CATEGORIES: Final = frozenset({"Zs", "Zl", "Zp", "Cc", "Ps", "Pe", "Pi", "Pf"})
#: What may make up a domain: letters, digits, marks, hyphens and the dots (the
#: ideographic and full-width ones too, which IDNA reads as dots).
_DOMAIN_PUNCTUATION: Final = frozenset("-._\u3002\uff0e\uff61")
#: What a domain does not end with: a sentence's full stop or hyphen.
_TRAILING: Final = ".-\u3002\uff0e\uff61"
#: "@" and its full-width and small forms, which some servers' texts use.
_AT_SIGNS: Final = "@\uff20\ufe6b"
_AT_SIGN: Final = re.compile("[@\uff20\ufe6b]")
#: A quoted local part ('"john doe"@', escapes included) before an at-sign.
_QUOTED_LOCAL: Final = re.compile(r'"(?:[^"\\\r\n]|\\.){0,130}" ?(?=[@\uff20\ufe6b])')
#: A key a server writes before an address without a separator ("to=ann@x").
_KEY_PREFIX: Final = re.compile(
    r"(?:to|from|rcpt|orcpt|recipient|sender|user|mailbox|mailfrom|smtp\.mailfrom"
    r"|envelope-from)=",
    re.I,
)
#: RFC 5321 §4.5.3.1: at most 255 octets of domain; a quoted local part of 64 and quotes.
_MAX_DOMAIN: Final = 255
#: Output past which masking stops: the event shows MAX_EVENT_TEXT characters, and
#: masking 1,200 characters of short Unicode addresses cost 10 ms (review).
_MASKED_ENOUGH: Final = 2 * MAX_EVENT_TEXT
#: Local parts too common to be anyone's: an echo of one alone stays readable.
_GENERIC_LOCAL_PARTS: Final = frozenset(
    {"user", "mail", "info", "admin", "support", "contact", "sales", "office", "postmaster",
     "webmaster", "noreply", "hello", "test", "unknown", "mailbox", "recipient", "address"}
)  # fmt: skip


@functools.lru_cache(maxsize=512)
def _mailbox_key(address: str) -> str:
    """One form for every spelling of a mailbox: composed (NFC), lower-cased, the domain
    as its A-label, no trailing dot (a server may quote what it got in another form).
    Lower-cased, not case-folded: "strasse@" is not "straße@". Kept for repeated
    tokens (a reply listing one address per line, the IDNA conversion per token)."""
    key = normalise_address(unicodedata.normalize("NFC", address).rstrip("."))
    return unicodedata.normalize("NFC", key)


def _in_local(ch: str) -> bool:
    if ch.isascii():
        return ch.isalnum() or ch in _LOCAL_PUNCTUATION
    return ch not in _AT_SIGNS and unicodedata.category(ch) not in _NOT_LOCAL_CATEGORIES


def _in_domain(ch: str) -> bool:
    return ch.isalnum() or ch in _DOMAIN_PUNCTUATION or _is_mark(ch)


def _is_mark(ch: str) -> bool:
    return not ch.isascii() and unicodedata.category(ch).startswith("M")


def _in_address(ch: str) -> bool:
    return _in_local(ch) or _in_domain(ch) or ch in _AT_SIGNS or ch in '"\\'


def shown_text(text: str, address: str, style: RecipientStyle) -> str:
    """The deciding reply for an event: one line, at most :data:`MAX_EVENT_TEXT`
    characters, with **every address in it masked** (unless ``style`` is "full"): the
    recipient's, in whatever spelling the server quoted it (case, Unicode normal form,
    Unicode or A-label domain), shown as the event's ``recipient`` field is
    ("550 5.1.1 <b***@example.org>: User unknown"); any other (a co-recipient, a
    forwarding target, our sender) masked the same way in its own spelling. An echo of
    the recipient's local part alone ("mailbox ann.smith does not exist") is masked too.

    An address is found from what it may contain, not from what may surround it: for
    each "@", the run of local-part characters before it and of domain characters
    after it (a list of separators is never complete: eighth review). The outcome and
    the outbox journal keep the whole reply."""
    # One line first (linear), then cut with room for what masking removes.
    line = _whole_words(" ".join(_whole_words(text, _MAX_SCANNED).split()), MAX_EVENT_TEXT * 4)
    if style == "full":
        return _cut(line)
    if _AT_SIGN.search(line):
        line = _addresses_masked(line, address, style)
    if "@" not in address:
        return _cut(line)
    local = unicodedata.normalize("NFC", address.rpartition("@")[0])
    if len(local) >= 4 and local.casefold() not in _GENERIC_LOCAL_PARTS:
        if not line.isascii():
            line = unicodedata.normalize("NFC", line)  # as the local part is compared
        # Where it stands alone: not inside a longer word or another local part.
        line = _replace_alone(line, local, "***", before=".@-", after="-")
    return _cut(line)


def shown_error(exc: BaseException | None, style: RecipientStyle) -> str:
    """An exception's text for an event's ``error`` field, every address in it shown as
    events show recipients (a store error names the address it was suppressing: it went
    to the logs whole whatever ``recipient_style`` said; security review)."""
    return "" if exc is None else shown_text(str(exc), "", style)


def _addresses_masked(line: str, address: str, style: RecipientStyle) -> str:
    """``line`` with each address in it masked (see :func:`shown_text`). Linear: each
    character is looked at a bounded number of times (runs stop at the address before),
    and masking stops once enough has been written for the event."""
    wanted = None if "@" not in address else _mailbox_key(address)
    # Quoted local parts first: one may hold an "@" of its own ('"bob@x"@example.org').
    # Only those a host name follows: '"bob@x.org" @ 10:30' quotes an address, it is
    # not one (thirteenth review: the quoted address went through whole).
    quoted = [
        (m.start(), m.end())
        for m in _QUOTED_LOCAL.finditer(line)
        if _starts_host(line[m.end() + 1 : m.end() + 2]) or _host_after(line, m.end()) >= 0
    ]
    q = 0  # the first quoted local part not yet behind us
    out: list[str] = []
    written = 0
    done = 0  # where the text not yet copied starts (after the last address masked)
    for found in _AT_SIGN.finditer(line):
        at = found.start()
        while q < len(quoted) and quoted[q][1] < at:
            q += 1
        if at < done or (q < len(quoted) and quoted[q][0] < at < quoted[q][1]):
            continue  # inside a quoted local part: its own "@" belongs to it
        if q < len(quoted) and quoted[q][1] == at and quoted[q][0] >= done:
            start = quoted[q][0]
        else:
            start = _local_start(line, at, done)
        if start == at:  # nothing before the "@" ("@example.org"): no address
            continue
        host = at + 1
        if line[at - 1] == " " or line[at + 1 : at + 2] in (" ", "<", "("):
            # Space, a bracket or a comment around the "@" ("bob @ example.org",
            # "bob @(c)x.org": fifteenth review): an address only if a host name follows;
            # "an @-sign" and "sent @ 10:30" are words.
            host = _host_after(line, at)
            if host < 0:
                if line[at - 1] == " ":
                    continue
                host = at + 1
        end = _domain_end(line, host - 1)
        shown = _masked(line[start:end], address, wanted, style)
        if _runs_into_next(line, end):
            # The domain runs into the next address's local part ("ann@example.orgと
            # 受信者bob@x", "ann@x.org.bob+tag@y", "ann@x.orgbob @y"): hidden too.
            shown = shown.rpartition("@")[0] + "@***"
        out.append(line[done:start])
        out.append(shown)
        written += len(out[-1]) + len(out[-2])
        done = end
        if written > _MASKED_ENOUGH:  # the rest is past what the event shows
            out.append(" …")
            return "".join(out)
    if not out:
        return line
    out.append(line[done:])
    return "".join(out)


_DOTTED_HOST: Final = re.compile(r"[^\W_][\w-]*(?:[.\u3002\uff0e\uff61][\w-]+)+")


def _host_after(line: str, at: int) -> int:
    """Where a host name starts after the at-sign at ``at``, past one space, an opening
    "<" and a comment; -1 unless an address literal or a dotted name is there."""
    j = at + 1
    if line.startswith(" ", j):
        j += 1
    if line.startswith("<", j):
        j += 1
    if line.startswith("(", j):
        close = line.find(")", j, j + 2 * _MAX_LOCAL)
        j = close + 1 if close != -1 else j
    if line.startswith(" ", j):
        j += 1
    if line.startswith("[", j) or _DOTTED_HOST.match(line, j):
        return j
    return -1


def _starts_host(ch: str) -> bool:
    """Whether a domain can start with ``ch``: a letter, a digit, an address literal."""
    return ch.isalnum() or ch == "["


def _runs_into_next(line: str, end: int) -> bool:
    """Whether what follows a domain ending at ``end`` is the rest of a local part
    before another at-sign: local-part characters and at most one space, then "@"."""
    j = end
    while j < len(line) and j - end < 4 * _MAX_LOCAL and _in_local(line[j]):
        j += 1
    if line.startswith(" ", j) and j + 1 < len(line) and line[j + 1] in _AT_SIGNS:
        j += 1  # "bob @x": a space before the at-sign
    return j < len(line) and line[j] in _AT_SIGNS


def _local_start(line: str, at: int, done: int) -> int:
    """Where the local part before the at-sign at ``at`` starts (``at`` when there is
    none), not before ``done``: the whole word before it (after one space: "bob @x"),
    whatever it is made of, so no character before the "@" decides that there is no
    address ("'bob.secret'@x", "<bob,@x>": eleventh review); from after the last
    opening bracket or quotation mark in it ("宛先「info@x", "<bob@x"), unless that
    opens a comment that ends at the "@" ("bob(work)@x": all of it); then without
    punctuation before its first letter or digit, and without a key such as "to="."""
    i = at
    if i > done and line[i - 1] == " ":
        i -= 1
    word = i  # back to white space, however long (a longer local part showed its head)
    while word > done and not line[word - 1].isspace() and line[word - 1] not in _AT_SIGNS:
        word -= 1
    if word == i:
        return at
    start = word
    depth = 0  # inside a comment, seen from its end: its marks open nothing
    for j in range(i - 1, word - 1, -1):  # the last opening mark, outside comments
        ch = line[j]
        if ch == ")":
            depth += 1
        elif ch == "(" and depth:
            depth -= 1
        elif not depth and j < i - 1 and _opens(ch):
            start = j + 1
            break
    if any(ch.isalnum() for ch in line[start:i]):  # a local part of symbols: all of it
        while start < i - 1 and not line[start].isalnum():
            start += 1
    key = _KEY_PREFIX.match(line, start)
    if key is not None and key.end() < i:
        start = key.end()
    return start


def _opens(ch: str) -> bool:
    """An opening bracket or quotation mark, or a separator ("orcpt=rfc822;ann@x"); not
    what RFC 5322 allows in a local part ("o'brien", "ann{x}")."""
    if ch.isascii():
        return ch in '<(["[,;:'
    return unicodedata.category(ch) in ("Ps", "Pi")


def _domain_end(line: str, at: int) -> int:
    """Where the domain after the at-sign at ``at`` ends: an address literal to its
    "]", else the run of domain characters without a trailing full stop or hyphen."""
    end = at + 1
    if line.startswith("[", end):  # an address literal: "zz@[192.0.2.1]"
        close = line.find("]", end, end + 64)
        return close + 1 if close != -1 else end
    while end < len(line) and end - at <= _MAX_DOMAIN and _in_domain(line[end]):
        end += 1
    while end > at + 1 and line[end - 1] in _TRAILING:
        end -= 1
    return end


def _masked(token: str, address: str, wanted: str | None, style: RecipientStyle) -> str:
    """One address found in a reply, as an event shows it: the recipient's as the event
    shows the recipient, another in its own spelling, masked the same way."""
    try:
        canonical = _canonical(token)
        if wanted is not None and _mailbox_key(canonical) == wanted:
            return show_recipient(address, style)
        return show_recipient(canonical, style)
    except Exception:  # an odd token normalise_address or IDNA refuses: hide all of it
        return "***@" + _AT_SIGN.split(token)[-1]


_DOT_ATOM: Final = re.compile(r"[^\s\"\\(),:;<>@\[\]]+")


def _canonical(token: str) -> str:
    """An address as found, in the one spelling its mailbox key and digest are taken
    from: a full-width or small at-sign as "@", a quoted local part that needs no quotes
    unquoted, a space before the "@" dropped (eleventh review: several digests for one
    mailbox, and none for a full-width at-sign)."""
    local, _, domain = _at_split(token)  # at the last at-sign of any form
    local = local.rstrip()
    if len(local) > 2 and local[0] == local[-1] == '"' and _DOT_ATOM.fullmatch(local[1:-1]):
        local = local[1:-1]
    return f"{local}@{domain}"


def _at_split(token: str) -> tuple[str, str, str]:
    parts = _AT_SIGN.split(token)
    return "@".join(parts[:-1]), "@", parts[-1]


def _whole_words(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, without the piece of a word the cut split
    (a piece of an address would not be recognised, and could be shown)."""
    if len(text) <= limit:
        return text
    piece = text[:limit]
    space = len(piece) - 1  # back to the last whitespace, of any kind str.split() splits on
    while space >= 0 and not piece[space].isspace():
        space -= 1
    if space > 0:
        rest = text[space : space + 2 * _MAX_LOCAL].lstrip()
        piece = piece[:space].rstrip()
        if rest[:1] in tuple(_AT_SIGNS) or rest[:2].lstrip()[:1] in tuple(_AT_SIGNS):
            # The last whole word's "@" is past the cut ("bob.secret @example.org":
            # fourteenth review): without it.
            last = len(piece)
            while last > 0 and not piece[last - 1].isspace():
                last -= 1
            piece = piece[:last]
    else:
        # No white space at all: a hard cut, without the characters an address could be
        # made of at its end (the piece of one the cut split: "...,bob.j").
        end = len(piece)
        while end > 0 and (_in_address(piece[end - 1]) or piece[end - 1] in "()"):
            end -= 1  # a comment too: "bob(c)" is a local part's start
        piece = piece[:end]
    if piece.count('"') % 2:  # an unclosed quoted string: a local part may start in it
        piece = piece[: piece.rindex('"')]
    return piece


def _replace_alone(
    line: str,
    needle: str,
    replacement: str,
    *,
    before: str,
    after: str,
    dot_then_word: bool = False,
) -> str:
    """``line`` with each case-insensitive occurrence of ``needle`` that stands alone
    replaced: no word character and none of ``before`` right before it, none and none of
    ``after`` right after it (with ``dot_then_word``, nor a full stop followed by one:
    "ann@example.org.evil.net"). Plain string search: a pattern compiled per recipient
    cost a tenth of a millisecond per event."""
    lowered, target = line.lower(), needle.lower()
    if not target or target not in lowered:
        return line
    if len(lowered) != len(line):  # a case mapping that changes lengths: the slow way
        word = rf"[\w{re.escape(after)}]"
        tail = rf"(?!\.?{word})" if dot_then_word else rf"(?!{word})"
        pattern = rf"(?<![\w{re.escape(before)}]){re.escape(needle)}{tail}"
        return re.sub(pattern, lambda m: replacement, line, flags=re.IGNORECASE)

    def word_char(ch: str, extra: str) -> bool:
        return ch.isalnum() or ch == "_" or ch in extra

    out: list[str] = []
    done = 0
    found = lowered.find(target)
    while found != -1:
        end = found + len(target)
        nxt = line[end : end + 1]
        alone = (found == 0 or not word_char(line[found - 1], before)) and not (
            nxt and word_char(nxt, after)
        )
        if alone and dot_then_word and nxt == ".":
            following = line[end + 1 : end + 2]
            alone = not (following and word_char(following, after))
        if alone:
            out.append(line[done:found])
            out.append(replacement)
            done = end
        found = lowered.find(target, end if alone else found + 1)
    out.append(line[done:])
    return "".join(out)


def _cut(line: str) -> str:
    """``line`` cut to :data:`MAX_EVENT_TEXT` characters, without a word cut in two (a
    piece of an address would otherwise survive the masking)."""
    if len(line) <= MAX_EVENT_TEXT:
        return line
    keep = MAX_EVENT_TEXT - 2  # room for " …"
    cut = line[:keep]
    space = cut.rfind(" ")
    if line[keep] != " " and space > 0:  # a word runs on past the cut: drop its piece
        cut = cut[:space]
    return cut + " …"


def outcome(
    o: RecipientOutcome,
    *,
    message_id: str,
    policy: str,
    server: str,
    style: RecipientStyle,
    elapsed_ms: float | None = None,
    **extra: Any,
) -> None:
    """The ``mail.delivery`` event of one recipient's outcome (DESIGN.md §5 fields).
    Building the fields is guarded as emitting them is (see :func:`_log`): the outcome
    is already decided, nothing here may undo it."""
    with suppress(Exception):
        _delivery_of(o, message_id, policy, server, style, elapsed_ms, extra)


def _delivery_of(  # noqa: PLR0917 - one call site, the fields of one event
    o: RecipientOutcome,
    message_id: str,
    policy: str,
    server: str,
    style: RecipientStyle,
    elapsed_ms: float | None,
    extra: dict[str, Any],
) -> None:
    delivery(
        o.state,
        message_id=message_id,
        recipient=show_recipient(o.recipient, style),
        domain=recipient_domain(o.recipient),
        reason=o.reason,
        code=o.code,
        status=o.status,
        attempts=o.attempts,
        elapsed_ms=None if elapsed_ms is None else round(elapsed_ms, 3),
        policy=policy,
        server=server,
        ambiguous=o.ambiguous,
        next_attempt_at=None if o.next_attempt_at is None else o.next_attempt_at.isoformat(),
        persisted=o.persisted,
        rule=o.rule,
        action=o.action,
        text=shown_text(o.text, o.recipient, style),
        **extra,
    )


def attempt(**fields: Any) -> None:
    """Emit ``mail.attempt`` at debug level."""
    _log("debug", "mail.attempt", **fields)


def worker_summary(**fields: Any) -> None:
    """Emit the worker's periodic ``mail.worker.summary`` at info level."""
    _log("info", "mail.worker.summary", **fields)


def dsn(state: str, **fields: Any) -> None:
    """Emit ``mail.dsn`` for one recipient of a bounce message (warning for a bounce)."""
    _log("warning" if state == "bounced" else "info", "mail.dsn", state=state, **fields)


def dsn_refused(**fields: Any) -> None:
    """A bounce named more dead addresses than one report may suppress: none of them
    was put on the suppression list (a forged bounce could otherwise list thousands)."""
    _log("warning", "mail.dsn_refused", **fields)


def worker_policy_fallback(**fields: Any) -> None:
    """A stored message's policy no longer loads by name: the worker uses another."""
    _log("warning", "mail.worker.policy_fallback", **fields)


def worker_lease_lost(**fields: Any) -> None:
    """A claim's lease was taken over before the worker delivered it (``when=renewing``:
    skipped) or recorded it (``when=recording``: another worker may send it too)."""
    _log("warning", "mail.worker.lease_lost", **fields)


def worker_store_busy(**fields: Any) -> None:
    """Recording an attempt found the database locked; the worker waits and retries."""
    _log("warning", "mail.worker.store_busy", **fields)


def worker_suppression_failed(**fields: Any) -> None:
    """A dead address could not be added to the suppression list (the store stayed
    locked); the attempt itself was recorded."""
    _log("warning", "mail.worker.suppression_failed", **fields)


def worker_relay_held(**fields: Any) -> None:
    """The relay refused our own configuration (credentials, TLS): the worker makes no
    attempt through it until ``until``, so a wrong password costs one failed AUTH per
    hold, not one per queued message."""
    _log("error", "mail.worker.relay_held", **fields)


def worker_lease_short(**fields: Any) -> None:
    """The worker's lease is shorter than one transaction of a policy may take: a slow
    server can make the lease run out mid-delivery and the message be sent twice."""
    _log("warning", "mail.worker.lease_short", **fields)


def suppression_failed(**fields: Any) -> None:
    """``send()`` could not add a dead address to the suppression list (the store stayed
    locked); the delivery and any deferral were recorded."""
    _log("warning", "mail.suppression_failed", **fields)


def signal_error(**fields: Any) -> None:
    """A receiver of one of the integration's delivery signals raised; the send is not
    affected."""
    _log("error", "mail.signal_error", **fields)
