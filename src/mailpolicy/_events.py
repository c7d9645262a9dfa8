"""Structured events (DESIGN.md §5): one ``mail.delivery`` per recipient per ``send()``,
one ``mail.attempt`` per SMTP attempt at debug level.

Events go through structlog's global configuration, looked up at each call (so an
application's ``structlog.configure`` and ``structlog.testing.capture_logs()`` see them);
while structlog is not configured, through the standard library's ``mailpolicy`` logger.
Recipients are masked by default; passwords never appear.
"""

from __future__ import annotations

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
        # so Ann@Example.ORG, ann@example.org and a Unicode domain's two spellings are
        # one token.
        key = normalise_address(address)
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


#: An address as servers quote it (inside <>, after "TO:", in prose): what is between
#: separators on both sides of an "@" (RFC 5322 atext allows ' { } ` in a local part).
#: (Typographic quotes and guillemets too, written as escapes the regex reads.)
_SEPARATORS: Final = r"\s<>()\[\]\",;:/|\u201c\u201d\u2018\u2019\u00ab\u00bb"
#: What may stand before a local part inside a token ("to=", quotes, "{").
_BEFORE_LOCAL: Final = "={'`"
#: What may follow the domain inside a token (a full stop, quotes, "}", "?", "!", "-").
_AFTER_DOMAIN: Final = ".'`}?!-"
_ADDRESS_TOKEN: Final = re.compile(rf"[^{_SEPARATORS}]+@[^{_SEPARATORS}]+")
#: Local parts too common to be anyone's: an echo of one alone stays readable.
_GENERIC_LOCAL_PARTS: Final = frozenset(
    {"user", "mail", "info", "admin", "support", "contact", "sales", "office", "postmaster",
     "webmaster", "noreply", "hello", "test", "unknown", "mailbox", "recipient", "address"}
)  # fmt: skip


def _local_key(local: str) -> str:
    """A local part as :func:`_mailbox_key` writes it: NFC, lower-cased, case-folded."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", local).lower()).casefold()


def _mailbox_key(address: str) -> str:
    """One form for every spelling of a mailbox: NFC, case-folded, the domain as its
    A-label, no trailing dot (a server may quote what it got in another form)."""
    key = normalise_address(unicodedata.normalize("NFC", address.rstrip(".")))
    return unicodedata.normalize("NFC", key).casefold()


def shown_text(text: str, address: str, style: RecipientStyle) -> str:
    """The deciding reply for an event: one line, at most :data:`MAX_EVENT_TEXT`
    characters, the recipient's address in it shown as the event shows the recipient
    ("550 5.1.1 <b***@example.org>: User unknown"), whatever the spelling the server
    quoted (case, Unicode normal form, Unicode or A-label domain), and an echo of its
    local part alone ("mailbox ann.smith does not exist") masked too."""
    # One line first (linear), then cut with room for what masking removes: the token
    # pattern costs more than linear time on a long run without a separator.
    line = _whole_words(" ".join(_whole_words(text, _MAX_SCANNED).split()), MAX_EVENT_TEXT * 4)
    if style == "full" or "@" not in address:
        return _cut(line)
    if not line.isascii():
        line = unicodedata.normalize("NFC", line)  # as the address is compared below
    local = unicodedata.normalize("NFC", address.rpartition("@")[0])
    echoes_local = len(local) >= 4 and local.casefold() not in _GENERIC_LOCAL_PARTS
    if "@" not in line and not (echoes_local and local.lower() in line.lower()):
        return _cut(line)  # nothing that can name the recipient (the common "250 OK")
    wanted_local, _, wanted_domain = _mailbox_key(address).rpartition("@")
    shown = show_recipient(address, style)
    # First the address as given, literally (a quoted local part, an address literal:
    # forms no token pattern takes whole), where it stands alone: not the tail of
    # "joann@..." nor the head of "ann@example.org.evil.net"; "to=ann@...", "ann@...'s"
    # and "ann@...?" are the address.
    line = _replace_alone(line, address, shown, before=".+-", after="-", dot_then_word=True)

    def mask(m: re.Match[str]) -> str:
        # Then every other spelling, token by token. A token may carry what is not the
        # address: "to=", "recipient/", quotes, "{...}", a full stop, "'s", "?".
        token = m.group()
        at = token.index("@")
        domain = token[at + 1 :].rstrip(_AFTER_DOMAIN)
        if domain.endswith("'s"):
            domain = domain[:-2].rstrip(_AFTER_DOMAIN)
        if not domain or _mailbox_key("x@" + domain).rpartition("@")[2] != wanted_domain:
            return token  # the domain once per token: not per place a local part may start
        # The local part starts at the token's start or after one of those characters
        # ("o'brien@" is an address, "to=ann@" holds one): try each, longest first,
        # within a local part's length (RFC 5321: 64 octets) of the "@".
        # Normal forms and case folding change a length by at most a factor of three:
        # candidates of any other length are not compared.
        shortest, longest = max(1, len(wanted_local) // 3), 3 * len(wanted_local) + 3
        first = max(0, at - min(longest, 4 * _MAX_LOCAL))
        starts = [first] + [i + 1 for i in range(first, at) if token[i] in _BEFORE_LOCAL]
        for start in starts:
            if at - start >= shortest and _local_key(token[start:at]) == wanted_local:
                return token[:start] + shown + token[at + 1 + len(domain) :]
        return token

    if "@" in line:
        line = _ADDRESS_TOKEN.sub(mask, line)
    if echoes_local:
        # Also before another domain: "ann.smith@mail.example.org", an alias's rewrite.
        line = _replace_alone(line, local, "***", before=".@-", after="-")
    return _cut(line)


def _whole_words(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, without the piece of a word the cut split
    (a piece of an address would not be recognised, and could be shown)."""
    if len(text) <= limit:
        return text
    piece = text[:limit]
    if text[limit].isspace():
        return piece
    space = len(piece) - 1  # back to the last whitespace, of any kind str.split() splits on
    while space >= 0 and not piece[space].isspace():
        space -= 1
    return piece[:space] if space > 0 else piece


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
