"""Read RFC 3464 delivery-status notifications (bounce messages) and judge them.

:func:`parse_dsn` turns one bounce e-mail into a :class:`DeliveryStatusReport`: the
per-message fields of its ``message/delivery-status`` part (RFC 3464 §2.2), one
:class:`DsnRecipient` per per-recipient block (§2.3), in order, and the Message-ID of the
returned message. RFC 6533's ``message/global-delivery-status`` (UTF-8 fields) is read the
same way. Anything that is not a delivery-status notification raises :class:`DsnError`
naming what was missing; no other exception escapes for any content.

:func:`judge_dsn` classifies each recipient's ``Diagnostic-Code`` (or its ``Status`` when
there is none) with the same classifier as live SMTP replies and applies a policy:
``failed`` with a dead-address reason and recipient evidence suppresses; ``delayed`` is
transient and never suppresses; ``delivered`` / ``relayed`` / ``expanded`` are successes.

Only the standard library ``email`` package is used (``policy=email.policy.default``).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import email.parser
import email.policy
import email.utils
import quopri
import re
import time
import urllib.parse
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.message import Message
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import idna

from . import _events as events
from ._address import a_label
from ._classify import Verdict, classify_parsed, decide_on, default_policy
from ._errors import InvalidInputError, MailPolicyError
from ._policy import Decision, Policy
from ._reply import MAX_SCAN, ParsedReply, parse_reply
from ._rules import RuleSet
from ._store import Attempt, normalise_address
from ._vocab import Kind, Reason, Stage

if TYPE_CHECKING:
    from ._store import Store

DsnAction = Literal["failed", "delayed", "delivered", "relayed", "expanded"]
#: What intake_dsn did about a suppress decision (DsnVerdict.suppression).
DsnIntake = Literal["added", "already", "no store", "disabled", "too many", ""]
#: The most distinct addresses one report may put on the suppression list. A bounce is
#: not authenticated: anyone can mail the bounce address a DSN naming any addresses, and
#: one forged 633 KB report suppressed 5,000 of them (security review). A real DSN
#: reports one message's recipients; an application's messages have a handful. A report
#: naming more dead addresses than this suppresses none of them (``"too many"``) and
#: says so (``mail.dsn_refused``); each can still be suppressed by a report of its own.
MAX_SUPPRESSIONS_PER_REPORT: Final = 50
#: The RFC 3464 §2.3.3 action values, in the order the RFC lists them.
DSN_ACTIONS: Final[tuple[DsnAction, ...]] = get_args(DsnAction)

#: What a recipient's DSN means for the message: ``bounced`` (failed), ``deferred``
#: (delayed: the reporting MTA is still trying) or ``delivered`` (delivered, relayed,
#: expanded). The names are the outcome states of DESIGN.md §1.
DsnState = Literal["delivered", "deferred", "bounced"]

_STATE_OF: Final[dict[DsnAction, DsnState]] = {
    "failed": "bounced",
    "delayed": "deferred",
    "delivered": "delivered",
    "relayed": "delivered",
    "expanded": "delivered",
}
_DS_TYPES: Final = frozenset({"message/delivery-status", "message/global-delivery-status"})
_REPORT_TYPES: Final = frozenset({"delivery-status", "global-delivery-status"})
# The returned message (RFC 3462 §2 third part): whole, or its headers only.
_RETURNED_MESSAGE: Final = frozenset({"message/rfc822", "message/global", "message/global-headers"})
_RETURNED_HEADERS: Final = frozenset({"text/rfc822-headers"})
# The human-readable part is read only to find a recipient's paragraph; bounded.
_MAX_NOTICE: Final = 65536
#: How much of a bounce given as bytes or text is read. RFC 3462 puts the notice and the
#: delivery-status part first and the returned message last, so what a DSN says about
#: its recipients fits in the first few kilobytes; the rest, a returned message with its
#: attachments, is not needed whole. Bounds the email package's parse of a hostile
#: bounce (security review).
MAX_DSN_READ: Final = 2 * 1024 * 1024
#: MIME boundary lines in what is read: a DSN has a handful of parts; the email package
#: spends ~80 µs on each, so 100,000 empty ones (683 KB) cost 8 s.
_MAX_BOUNDARIES: Final = 1000
#: Characters kept of one delivery-status field, folded lines included.
_MAX_FIELD: Final = 65536

_MESSAGE_FIELDS: Final = frozenset(
    {
        "reporting-mta",
        "dsn-gateway",
        "received-from-mta",
        "arrival-date",
        "original-envelope-id",
    }
)
_RECIPIENT_FIELDS: Final = frozenset(
    {
        "original-recipient",
        "final-recipient",
        "action",
        "status",
        "remote-mta",
        "diagnostic-code",
        "last-attempt-date",
        "final-log-id",
        "will-retry-until",
    }
)

_FIELD_NAME = re.compile(r"([!-9;-~]+)[ \t]*:")
_TYPED = re.compile(r"[ \t]*([A-Za-z0-9][A-Za-z0-9.+_-]{0,63})[ \t]*;")
_STATUS = re.compile(r"[ \t]*([245])\.([0-9]{1,3})\.([0-9]{1,3})(?![0-9.])")
_ACTION = re.compile(r"[ \t]*([A-Za-z-]+)")
_COMMENT = re.compile(r"\([^()]*\)")
_SPACE = re.compile(r"\s+")
_LINES = re.compile(r"\r\n|\r|\n")
_BLANK_LINES = re.compile(r"\n[ \t]*\n")
# RFC 6533 §3 embedded-unicode-char in an ASCII "utf-8" address: \x{HHHH}.
_UNICODE_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


class DsnError(MailPolicyError, ValueError):
    """A message that is not a readable delivery-status notification. The message names
    what was missing (no multipart/report, another report-type, no delivery-status part,
    a recipient without Final-Recipient or Action)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DsnRecipient:
    """One per-recipient block of a delivery-status part (RFC 3464 §2.3).

    ``final_recipient`` and ``original_recipient`` are addresses without their type
    (``rfc822;``): angle brackets and comments removed, the domain lower-cased, the local
    part as written; RFC 6533 ``\\x{HHHH}`` escapes in a ``utf-8`` address decoded.
    ``action`` is lower-cased; ``status`` the RFC 3463 code of the Status field (None if
    absent or not a status code). ``remote_mta`` is the host after ``dns;`` (comments and
    a final dot removed). ``diagnostic_code`` is the text after its type (``smtp;``,
    ``X-Postfix;``, ``utf-8;``; the type is ``diagnostic_type``, lower-cased), unfolded,
    white space squeezed. Dates are parsed (None when absent or unreadable).
    ``explanation`` is the recipient's paragraph in the human-readable part when the MTA
    writes one that starts with the address (Postfix ``<a@b>: host ... said: ...
    (in reply to RCPT TO command)``, Exim ``a@b`` then indented lines), unfolded.
    ``extra_fields`` holds the other fields (``x-display-name``, ``x-exim-diagnostic``,
    repeated ones), lower-cased names, in order.
    """

    final_recipient: str
    original_recipient: str | None
    action: DsnAction
    status: str | None
    remote_mta: str | None
    diagnostic_code: str | None
    diagnostic_type: str | None
    last_attempt_date: datetime | None
    will_retry_until: datetime | None
    final_log_id: str | None = None
    explanation: str | None = None
    extra_fields: tuple[tuple[str, str], ...] = ()

    @property
    def domain(self) -> str:
        """The final recipient's domain, lower-case, IDNA ASCII where it converts."""
        domain = self.final_recipient.rpartition("@")[2].lower().rstrip(".")
        try:  # as the sender writes domains on the wire
            return a_label(domain)
        except idna.IDNAError:
            return domain

    def field(self, name: str) -> str | None:
        """The first extra field of that name (any case), e.g. ``x-display-name``."""
        wanted = name.lower()
        return next((v for n, v in self.extra_fields if n == wanted), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field (dates as ISO 8601)."""
        return {
            "final_recipient": self.final_recipient,
            "original_recipient": self.original_recipient,
            "action": self.action,
            "status": self.status,
            "remote_mta": self.remote_mta,
            "diagnostic_code": self.diagnostic_code,
            "diagnostic_type": self.diagnostic_type,
            "last_attempt_date": _iso(self.last_attempt_date),
            "will_retry_until": _iso(self.will_retry_until),
            "final_log_id": self.final_log_id,
            "explanation": self.explanation,
            "extra_fields": [list(pair) for pair in self.extra_fields],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryStatusReport:
    """One delivery-status notification: the per-message fields (RFC 3464 §2.2), the
    recipients in order, and the Message-ID of the message it reports on
    (``original_message_id``: from the returned ``message/rfc822`` or
    ``text/rfc822-headers`` part, else an ``X-Original-Message-ID`` field or header, with
    its angle brackets; None when absent). ``reporting_mta`` and ``received_from_mta``
    are the names after their type (``dns;``)."""

    reporting_mta: str | None
    arrival_date: datetime | None
    original_message_id: str | None
    original_envelope_id: str | None
    recipients: tuple[DsnRecipient, ...]
    received_from_mta: str | None = None
    extra_fields: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field (dates as ISO 8601)."""
        return {
            "reporting_mta": self.reporting_mta,
            "arrival_date": _iso(self.arrival_date),
            "original_message_id": self.original_message_id,
            "original_envelope_id": self.original_envelope_id,
            "received_from_mta": self.received_from_mta,
            "recipients": [r.to_dict() for r in self.recipients],
            "extra_fields": [list(pair) for pair in self.extra_fields],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DsnVerdict:
    """What one recipient's DSN means and what the policy does about it.

    ``recipient`` is the final recipient's address, ``dsn_action`` the DSN's Action,
    ``state`` its meaning for the message (``bounced``, ``deferred``, ``delivered``),
    ``verdict`` the classification (its ``retry``/``suppress``/``action`` are the default
    policy's, as for every Verdict), ``decision`` the given policy's decision, and
    ``suppress`` whether to put the address on the suppression list: only for ``failed``
    with the policy's suppress decision (a dead-address reason with recipient evidence).
    ``dsn`` is the parsed per-recipient block. ``suppression`` says what
    :func:`intake_dsn` did about ``suppress``: ``"added"`` to the list, ``"already"`` (the
    address was on it: its entry is left as it was), ``"no store"`` (nothing to write
    to), ``"disabled"`` (the policy's suppression is off), ``"too many"`` (the report
    names more than :data:`MAX_SUPPRESSIONS_PER_REPORT` dead addresses: none is taken),
    or ``""`` (nothing to do, or not taken in). ``recorded`` says :func:`intake_dsn`
    found the message and recipient in the outbox and recorded the bounce there (its
    journal, state ``bounced``).
    """

    recipient: str
    dsn_action: DsnAction
    state: DsnState
    verdict: Verdict
    decision: Decision
    suppress: bool
    dsn: DsnRecipient = field(repr=False)
    suppression: DsnIntake = ""
    recorded: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping: the fields, the verdict and decision as mappings."""
        return {
            "recipient": self.recipient,
            "dsn_action": self.dsn_action,
            "state": self.state,
            "suppress": self.suppress,
            "suppression": self.suppression,
            "recorded": self.recorded,
            "verdict": self.verdict.to_dict(),
            "decision": self.decision.to_dict(),
            "dsn": self.dsn.to_dict(),
        }


# ---------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _text(value: str) -> str:
    """A header value from the parser as proper str: bytes the parser kept as surrogate
    escapes are decoded as UTF-8 (RFC 6533 fields), with replacement."""
    if value.isascii():
        return value
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def _squeeze(value: str) -> str:
    """Unfold (RFC 5322 §2.2.3) and squeeze white space to single spaces."""
    return _SPACE.sub(" ", value).strip()


def _split_typed(value: str) -> tuple[str | None, str]:
    """``"smtp; 550 ..."`` → ``("smtp", "550 ...")``; a value without a type → (None, v)."""
    m = _TYPED.match(value)
    if m is None:
        return None, _squeeze(value)
    return m.group(1).lower(), _squeeze(value[m.end() :])


def _address(value: str | None) -> str | None:
    """An address field's address: the type, comments and angle brackets removed, the
    domain lower-cased."""
    if value is None:
        return None
    kind, address = _split_typed(value)
    if '"' not in address:
        address = _squeeze(_COMMENT.sub(" ", address))
    address = address.strip()
    open_at, close_at = address.rfind("<"), address.rfind(">")
    if 0 <= open_at < close_at:
        # "<a@x>", or a display name some generators put there: "John Doe <a@x>"
        address = address[open_at + 1 : close_at].strip()
    if kind == "utf-8" and "\\x{" in address:
        address = _UNICODE_ESCAPE.sub(_unescape, address)
    local, at, domain = address.rpartition("@")
    if at and domain:
        address = f"{local}@{domain.lower().rstrip('.')}"
    return address or None


def _unescape(m: re.Match[str]) -> str:
    point = int(m.group(1), 16)
    if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
        return "\ufffd"
    return chr(point)


def _mta(value: str | None) -> str | None:
    """An MTA name field's name: ``"dns; mx.example.org. (192.0.2.4, ...)"`` →
    ``"mx.example.org"``."""
    if value is None:
        return None
    _, name = _split_typed(value)
    name = _squeeze(_COMMENT.sub(" ", name))
    if name and " " in name:
        name = name.split(" ", 1)[0]
    name = name.rstrip(".")
    return name or None


def _status(value: str | None) -> str | None:
    if value is None:
        return None
    m = _STATUS.match(value)
    if m is None:
        return None
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(_squeeze(value))
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


class _Block:
    """One block of header-like fields: the first occurrence of each known field, and
    everything else (unknown fields, repeats) in order."""

    def __init__(self, known: frozenset[str]) -> None:
        self._known = known
        self.fields: dict[str, str] = {}
        self.extra: list[tuple[str, str]] = []

    def add(self, name: str, value: str) -> None:
        name = name.lower()
        if name in self._known and name not in self.fields:
            self.fields[name] = value
        else:
            self.extra.append((name, _squeeze(value)))

    def get(self, name: str) -> str | None:
        return self.fields.get(name)

    def find(self, name: str) -> str | None:
        """A known field, or the first extra field of that name."""
        if name in self.fields:
            return self.fields[name]
        return next((v for n, v in self.extra if n == name), None)


def _blocks(text: str) -> list[list[tuple[str, str]]]:
    """Split a delivery-status body into blocks of (name, raw value) pairs (RFC 3464
    §2.1): blank lines separate blocks, lines starting with white space continue the
    previous field, lines that are not fields are skipped."""
    blocks: list[list[tuple[str, str]]] = []
    # Each field as its name and the pieces of its value: folded lines are joined once,
    # at the end of the field (joining per line copied the value each time: a
    # Diagnostic-Code of 1.28 million folded lines took 108 s; security review), and a
    # field stops growing at _MAX_FIELD characters.
    current: list[tuple[str, list[str]]] = []
    size = 0  # of the last field's pieces

    def close() -> None:
        if current:
            blocks.append([(name, " ".join(pieces)) for name, pieces in current])
            current.clear()

    for line in _LINES.split(text):
        if not line.strip():
            close()
            continue
        if line[0] in " \t":
            if current and size < _MAX_FIELD:
                piece = line.strip()
                current[-1][1].append(piece)
                size += len(piece) + 1
            continue
        m = _FIELD_NAME.match(line)
        if m is not None:
            first = line[m.end() :].strip()[:_MAX_FIELD]
            current.append((m.group(1), [first]))
            size = len(first)
    close()
    return blocks


def _one_recipient_each(
    blocks: list[list[tuple[str, str]]],
) -> list[list[tuple[str, str]]]:
    """Per-recipient blocks, one recipient each: a block with a second Final-Recipient
    (a generator that left out the blank line) is split there, an Original-Recipient
    right before it going with it. Otherwise the second recipient's Status and
    Diagnostic-Code would be read as the first one's, and the second one lost."""
    out: list[list[tuple[str, str]]] = []
    for pairs in blocks:
        current: list[tuple[str, str]] = []
        seen_final = False
        for name, value in pairs:
            if name.lower() == "final-recipient":
                if seen_final:
                    carried = []
                    if current and current[-1][0].lower() == "original-recipient":
                        carried = [current.pop()]
                    out.append(current)
                    current = carried
                seen_final = True
            current.append((name, value))
        out.append(current)
    return out


def _payload_bytes(part: Message) -> bytes:
    """A leaf part's content, transfer-decoded."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _decode(raw: bytes, charset: str | None) -> str:
    if charset:
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = None
    try:
        return raw.decode(charset or "utf-8", "replace")
    except (LookupError, ValueError):
        return raw.decode("utf-8", "replace")


def _serialised(message: Message, *, block: bool = False) -> str:
    """A parsed message back as text (its raw header lines and its body), for parts the
    ``email`` package parsed as a message but which are really field blocks. For one
    block of a message/delivery-status list (``block``), the "body" is the rest of the
    same block: the package stops reading fields at the first line that is not one."""
    lines = [f"{name}: {value}" for name, value in message.raw_items()]
    body = message.get_payload()
    if isinstance(body, list):
        rest = "\n\n".join(_serialised(m) for m in body if isinstance(m, Message))
    elif isinstance(body, str):
        # The body's bytes (8-bit text is kept as surrogate escapes by the parser).
        rest = _decode(_payload_bytes(message), "utf-8")
    else:
        rest = ""
    head = "\n".join(lines)
    separator = "\n" if block else "\n\n"
    return f"{head}{separator}{rest}" if head and rest else head or rest


def _status_text(part: Message) -> str:
    """The text of a ``message/delivery-status`` (or global) part, however the ``email``
    package exposed it: a list of field blocks (message/delivery-status), one parsed
    "message" (message/global-delivery-status, which the package reads like
    message/rfc822), or a plain payload."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = part.get_content_type() == "message/delivery-status"
        text = "\n\n".join(_serialised(m, block=blocks) for m in payload if isinstance(m, Message))
        cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        # RFC 6533 lets message/global-delivery-status be base64 or quoted-printable.
        if cte in {"base64", "quoted-printable"}:
            raw = _text(text).encode("utf-8", "replace")
            try:
                if cte == "base64":
                    raw = base64.b64decode(b"".join(raw.split()))
                else:
                    raw = quopri.decodestring(raw)
            except (binascii.Error, ValueError):
                return _text(text)
            return raw.decode("utf-8", "replace")
        return _text(text)
    return _decode(_payload_bytes(part), part.get_content_charset())


def _children(part: Message) -> list[Message]:
    if not part.is_multipart() or part.get_content_maintype() != "multipart":
        return []
    payload = part.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _find_report(message: Message) -> Message:
    """The multipart/report part: the message itself, or nested in multipart containers
    (never inside an attached message)."""
    stack = [message]
    other_report: str | None = None
    while stack:
        part = stack.pop(0)
        ctype = part.get_content_type()
        if ctype == "multipart/report":
            report_type = part.get_param("report-type")
            # An RFC 2231 value comes as (charset, language, text).
            value = report_type[2] if isinstance(report_type, tuple) else report_type
            if value is None or value.strip().lower() in _REPORT_TYPES:
                return part
            other_report = other_report or value.strip().lower()
        stack.extend(_children(part))
    if other_report is not None:
        raise DsnError(
            "not a delivery-status notification: a multipart/report with "
            f"report-type={other_report} (expected report-type=delivery-status)"
        )
    raise DsnError(
        "not a delivery-status notification: the message is "
        f"{message.get_content_type()}, with no multipart/report "
        "(report-type=delivery-status) part"
    )


def _header(message: Message, name: str) -> str | None:
    wanted = name.lower()
    for key, value in message.raw_items():
        if key.lower() == wanted:
            return _text(str(value))
    return None


def _message_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = _squeeze(value)
    return value or None


def _returned_message_id(report: Message) -> str | None:
    """The Message-ID of the returned message or returned headers, if any."""
    for part in _children(report):
        ctype = part.get_content_type()
        if ctype not in _RETURNED_MESSAGE and ctype not in _RETURNED_HEADERS:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            inner = payload[0] if payload and isinstance(payload[0], Message) else None
            return None if inner is None else _message_id(_header(inner, "message-id"))
        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(
            _payload_bytes(part)
        )
        return _message_id(_header(headers, "message-id"))
    return None


def _notice_paragraphs(report: Message) -> list[str]:
    """The paragraphs of the human-readable part (RFC 6522: the first part)."""
    children = _children(report)
    if not children:
        return []
    stack = [children[0]]
    while stack:
        part = stack.pop(0)
        if part.get_content_type() == "text/plain":
            text = _decode(_payload_bytes(part)[:_MAX_NOTICE], part.get_content_charset())
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            return [p for p in _BLANK_LINES.split(text) if p.strip()]
        stack.extend(_children(part))
    return []


#: Paragraphs of a notice by what their first line names, with their position.
ParagraphIndex = dict[str, tuple[int, str]]


def _paragraph_index(paragraphs: list[str]) -> ParagraphIndex:
    """Each paragraph under its lower-cased first line, and under the ``<addr>`` it
    starts with, if any; the first paragraph wins. Built once a report: looking each
    recipient up in the list instead made a bounce with many recipients and many
    paragraphs cost their product."""
    index: ParagraphIndex = {}
    for position, paragraph in enumerate(paragraphs):
        first = paragraph.strip().split("\n", 1)[0].strip().lower()
        index.setdefault(first, (position, paragraph))
        if first.startswith("<") and ">" in first:
            index.setdefault(first[: first.index(">") + 1], (position, paragraph))
    return index


def _explanation(index: ParagraphIndex, address: str) -> str | None:
    """The paragraph about ``address``: Postfix ``<addr>: ...`` or ``<addr> (expanded
    from ...): ...``, Exim ``addr`` alone on the first line."""
    wanted = address.lower()
    found = [hit for hit in (index.get(wanted), index.get(f"<{wanted}>")) if hit is not None]
    if not found:
        return None
    return _squeeze(min(found)[1])[:MAX_SCAN]


def _recipient(block: _Block, number: int, paragraphs: ParagraphIndex) -> DsnRecipient:
    final = _address(block.get("final-recipient"))
    if final is None:
        raise DsnError(f"per-recipient block {number} has no Final-Recipient address")
    action_value = block.get("action")
    if action_value is None:
        raise DsnError(f"per-recipient block {number} ({final}) has no Action field")
    m = _ACTION.match(action_value)
    action = m.group(1).lower() if m is not None else ""
    if action not in DSN_ACTIONS:
        raise DsnError(
            f"per-recipient block {number} ({final}) has Action {_squeeze(action_value)!r}; "
            f"expected one of {', '.join(DSN_ACTIONS)}"
        )
    diagnostic_type: str | None = None
    diagnostic: str | None = None
    raw_diagnostic = block.get("diagnostic-code")
    if raw_diagnostic is not None:
        diagnostic_type, diagnostic = _split_typed(raw_diagnostic)
        diagnostic = diagnostic[:MAX_SCAN] or None
    log_id = block.get("final-log-id")
    return DsnRecipient(
        final_recipient=final,
        original_recipient=_address(block.get("original-recipient")),
        action=action,
        status=_status(block.get("status")),
        remote_mta=_mta(block.get("remote-mta")),
        diagnostic_code=diagnostic,
        diagnostic_type=diagnostic_type,
        last_attempt_date=_date(block.get("last-attempt-date")),
        will_retry_until=_date(block.get("will-retry-until")),
        final_log_id=None if log_id is None else _squeeze(log_id) or None,
        explanation=_explanation(paragraphs, final),
        extra_fields=tuple(block.extra),
    )


def parse_dsn(data: bytes | bytearray | memoryview | str | Message) -> DeliveryStatusReport:
    """Read one delivery-status notification (RFC 3464 ``multipart/report;
    report-type=delivery-status``; a missing report-type is tolerated; RFC 6533's
    ``global-delivery-status`` too).

    ``data`` is the whole bounce e-mail as bytes or str (CRLF or LF), or a parsed
    :class:`email.message.Message`. Raises :class:`DsnError` when it is not a DSN (no
    multipart/report, another report-type such as ``feedback-report``, no
    delivery-status part, no recipient, a recipient without Final-Recipient or with an
    unknown Action), and :class:`InvalidInputError` for an argument of the wrong type.
    """
    if not isinstance(data, bytes | bytearray | memoryview | str | Message):
        raise InvalidInputError(
            f"parse_dsn takes bytes, str or an email.message.Message, not {type(data).__name__}"
        )
    if not isinstance(data, Message):
        data = data[:MAX_DSN_READ] if isinstance(data, str) else bytes(data[:MAX_DSN_READ])
        raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
        boundaries = _boundary_lines(raw)
        if boundaries > _MAX_BOUNDARIES:
            raise DsnError(
                f"not a bounce this library reads: {boundaries} MIME boundary lines in its "
                f"first {MAX_DSN_READ // 1024 // 1024} MiB (a DSN has a handful)"
            )
    try:
        if isinstance(data, Message):
            message = data
        elif isinstance(data, str):
            message = email.message_from_string(data, policy=email.policy.default)
        else:
            message = email.message_from_bytes(data, policy=email.policy.default)
        return _parse(message)
    except DsnError:
        raise
    except (LookupError, ValueError, TypeError, IndexError, AttributeError, RecursionError) as exc:
        # The email package's header and parameter parsers have known failure modes on
        # hostile input (malformed parameters, encoded words, deep nesting); a bounce
        # that trips them is unreadable, not a mistake of the caller.
        raise DsnError(f"unreadable message: {type(exc).__name__}: {exc}") from exc


#: A boundary parameter, in any form the email package reads: plain, quoted, or RFC
#: 2231 ("boundary*0=P", "boundary*=''P" with %XX escapes).
_BOUNDARY_PARAM: Final = re.compile(
    rb"(?i)boundary(?:\*\d*)?\*?\s*=\s*(?:[^'\";\s]*'[^'\";\s]*')?\"?([^\";\r\n]{1,70})"
)


def _boundary_lines(data: bytes) -> int:
    """How many lines start a MIME part: "--" and (the start of) a boundary some
    Content-Type declares, after a line feed or a lone carriage return, both of which
    end a line for the email package (a line of dashes in a returned message's text is
    none: tenth review; RFC 2231 forms and bare CRs were missed: eleventh review). More
    declared boundaries than a DSN ever has count as too many parts."""
    declared = {
        urllib.parse.unquote_to_bytes(b.strip())
        for b in _BOUNDARY_PARAM.findall(data, 0, MAX_DSN_READ)
    }
    if len(declared) > 50:
        return _MAX_BOUNDARIES + 1
    return sum(data.count(b"\n--" + b) + data.count(b"\r--" + b) for b in declared if b)


def _parse(message: Message) -> DeliveryStatusReport:
    report = _find_report(message)
    status_part = next((p for p in _children(report) if p.get_content_type() in _DS_TYPES), None)
    if status_part is None:
        found = ", ".join(p.get_content_type() for p in _children(report)) or "nothing"
        raise DsnError(f"multipart/report has no message/delivery-status part (its parts: {found})")
    blocks = _blocks(_status_text(status_part))
    names = [{name.lower() for name, _ in b} for b in blocks]
    per_message = _Block(_MESSAGE_FIELDS)
    if blocks and "final-recipient" not in names[0]:
        for name, value in blocks.pop(0):
            per_message.add(name, value)
    paragraphs = _paragraph_index(_notice_paragraphs(report))
    recipients: list[DsnRecipient] = []
    for number, pairs in enumerate(_one_recipient_each(blocks), start=1):
        block = _Block(_RECIPIENT_FIELDS)
        for name, value in pairs:
            block.add(name, _text(value))
        recipients.append(_recipient(block, number, paragraphs))
    if not recipients:
        raise DsnError(
            f"the {status_part.get_content_type()} part has no per-recipient fields "
            "(Final-Recipient, Action, Status)"
        )
    original_id = (
        _returned_message_id(report)
        or _message_id(per_message.find("x-original-message-id"))
        or _message_id(_header(message, "x-original-message-id"))
    )
    envelope_id = per_message.get("original-envelope-id")
    return DeliveryStatusReport(
        reporting_mta=_mta(_text(per_message.get("reporting-mta") or "")),
        arrival_date=_date(per_message.get("arrival-date")),
        original_message_id=original_id,
        original_envelope_id=None if envelope_id is None else _squeeze(envelope_id) or None,
        recipients=tuple(recipients),
        received_from_mta=_mta(_text(per_message.get("received-from-mta") or "")),
        extra_fields=tuple((n, _text(v)) for n, v in per_message.extra),
    )


# ---------------------------------------------------------------------------------------
# Judging
# ---------------------------------------------------------------------------------------


def _stage_hint(recipient: DsnRecipient) -> Stage | None:
    """The SMTP stage named outside the Diagnostic-Code: an MTA's own diagnostic
    extension (Exim's ``X-Exim-Diagnostic: X-str; SMTP error ... after RCPT TO:``), then
    the recipient's paragraph in the human-readable part (Postfix's ``(in reply to RCPT
    TO command)``)."""
    for name, value in recipient.extra_fields:
        if name.startswith("x-") and name.endswith("-diagnostic"):
            stage = parse_reply(value).stage
            if stage is not None:
                return stage
    if recipient.explanation is not None:
        return parse_reply(recipient.explanation).stage
    return None


def _rekind(
    verdict: Verdict,
    parsed: ParsedReply,
    kind: Kind,
    reason: Reason,
    rule: str,
) -> Verdict:
    """The verdict with another kind (and reason): the default policy decides again, so
    ``retry``/``suppress``/``action`` stay the default policy's as for every Verdict."""
    if kind == "success":
        return replace(
            verdict,
            kind="success",
            reason="delivered",
            retry=False,
            suppress=False,
            retry_after=None,
            rule=rule,
            action="deliver",
        )
    decision = default_policy().decide(
        kind=kind,
        reason=reason,
        code=verdict.code,
        status=verdict.status,
        stage=verdict.stage,
        text=parsed.text,
        attributed=verdict.attributed,
    )
    return replace(
        verdict,
        kind=kind,
        reason=reason,
        retry=decision.retry,
        suppress=decision.suppress,
        retry_after=parsed.retry_after() if decision.retry else None,
        rule=rule,
        action=decision.action,
    )


def classify_recipient(recipient: DsnRecipient, *, rules: RuleSet | None = None) -> Verdict:
    """Classify one recipient of a DSN (with ``rules``, a policy's ``classifier``, if
    given; else the shipped rules).

    The Diagnostic-Code is classified as a reply (its own reply code governs ``kind``,
    DESIGN.md §2 rule 1). When it quotes neither a reply code nor an enhanced status, or
    there is none, the DSN's Status stands in as the enhanced status: ``kind`` follows its
    class. With no Status either, ``kind`` follows the Action (``failed`` → permanent).
    The stage is the one the diagnostic names, else the one an ``X-*-Diagnostic`` field
    or the human-readable paragraph names. The Remote-MTA is the host for provider rules.
    Then the Action has the last word: ``delayed`` is transient (never suppressed),
    ``delivered`` / ``relayed`` / ``expanded`` are successes, ``failed`` never is.
    """
    parsed = parse_reply(recipient.diagnostic_code or "")
    if parsed.code is None and parsed.status is None and recipient.status is not None:
        parsed = replace(parsed, status=recipient.status)
    stage = parsed.stage if parsed.stage is not None else _stage_hint(recipient)
    host = (recipient.remote_mta or "").lower().rstrip(".")
    if host.startswith("[") or not any(c.isalpha() for c in host):
        host = ""  # an address literal names no provider
    verdict = classify_parsed(parsed, stage=stage, host=host, rules=rules)
    action = recipient.action
    if action == "failed":
        if parsed.code is None and parsed.status is None and verdict.kind != "permanent":
            return _rekind(verdict, parsed, "permanent", verdict.reason, "dsn.action-failed")
        if verdict.kind == "success":
            return _rekind(verdict, parsed, "permanent", "unknown", "dsn.action-failed")
        return verdict
    if action == "delayed":
        if verdict.kind == "transient":
            return verdict
        reason: Reason = "unknown" if verdict.kind == "success" else verdict.reason
        return _rekind(verdict, parsed, "transient", reason, f"{verdict.rule}+dsn.delayed")
    if verdict.kind == "success":
        return verdict
    return _rekind(verdict, parsed, "success", "delivered", f"dsn.action-{action}")


def judge_dsn(report: DeliveryStatusReport, *, policy: Policy | None = None) -> list[DsnVerdict]:
    """One :class:`DsnVerdict` per recipient of ``report``, in order.

    Each recipient is classified (:func:`classify_recipient`), then ``policy`` (default:
    ``load_policy("default")``) decides with the recipient's domain. ``suppress`` is the
    policy's suppress decision for a ``failed`` recipient: a permanent dead-address
    reason with recipient evidence (DESIGN.md §2 rule 3). ``delayed`` never suppresses.
    """
    if not isinstance(report, DeliveryStatusReport):
        raise InvalidInputError(
            f"judge_dsn takes a DeliveryStatusReport, not {type(report).__name__}"
        )
    if policy is not None and not isinstance(policy, Policy):
        raise InvalidInputError(f"policy must be a Policy, not {type(policy).__name__}")
    chosen = default_policy() if policy is None else policy
    verdicts: list[DsnVerdict] = []
    for recipient in report.recipients:
        verdict = classify_recipient(recipient, rules=chosen.classifier)
        decision = decide_on(
            chosen,
            verdict,
            text=recipient.diagnostic_code or "",
            domain=recipient.domain or None,
        )
        verdicts.append(
            DsnVerdict(
                recipient=recipient.final_recipient,
                dsn_action=recipient.action,
                state=_STATE_OF[recipient.action],
                verdict=verdict,
                decision=decision,
                suppress=recipient.action == "failed" and decision.suppress,
                dsn=recipient,
            )
        )
    return verdicts


def _take_in(
    v: DsnVerdict, store: Store | None, policy: Policy, when: float, added: set[str]
) -> DsnIntake:
    """Put a recipient the policy suppresses on the list, unless there is no store, the
    policy's suppression is off for its destination, or it is already listed (an entry
    already there, an operator's or a longer one, is never shortened or reworded by
    reading another bounce; an address twice in one report is added once)."""
    # The destination that made the decision (judge_dsn decides on the IDNA domain).
    suppression = policy.suppression_for(v.dsn.domain)
    if store is None:
        return "no store"
    if not suppression.enabled:
        return "disabled"
    key = normalise_address(v.recipient)
    if key in added or store.suppressed(v.recipient, now=when) is not None:
        return "already"
    store.add_suppression(
        v.recipient,
        reason=v.verdict.reason,
        now=when,
        ttl=suppression.ttl,
        code=v.verdict.code,
        status=v.verdict.status,
        text=v.dsn.diagnostic_code or "",
        policy=policy.name,
    )
    added.add(key)
    return "added"


def _bounce_attempt(judged: DsnVerdict, at: float) -> Attempt:
    """A DSN's failure as a journal entry (no SMTP attempt of ours: rule ``dsn.*``)."""
    verdict = judged.verdict
    return Attempt(
        at=at,
        state="bounced",
        reason=verdict.reason,
        code=verdict.code,
        status=verdict.status,
        text="bounce message: " + (judged.dsn.diagnostic_code or judged.dsn_action),
        rule=verdict.rule,
        action=judged.decision.action,
        ambiguous=False,
    )


def intake_dsn(
    report: DeliveryStatusReport,
    *,
    store: Store | None = None,
    policy: Policy | None = None,
    now: float | None = None,
    source: str = "",
) -> list[DsnVerdict]:
    """Judge a parsed DSN and act on it: with a ``store``, the hard bounces the policy
    suppresses go on the suppression list (with the policy's TTL; a ``delayed`` action
    never suppresses), and one ``mail.dsn`` event is emitted per recipient. ``source``
    (a file name) goes into the events."""
    policy = policy or default_policy()
    when = time.time() if now is None else now
    verdicts: list[DsnVerdict] = []
    added: set[str] = set()  # an address listed twice in one report is suppressed once
    judgements = judge_dsn(report, policy=policy)
    dead = {normalise_address(j.recipient) for j in judgements if j.suppress}
    too_many = len(dead) > MAX_SUPPRESSIONS_PER_REPORT
    if too_many:
        events.dsn_refused(
            source=source,
            original_message_id=report.original_message_id,
            addresses=len(dead),
            limit=MAX_SUPPRESSIONS_PER_REPORT,
        )
    for judged in judgements:
        done: DsnIntake = ""
        if judged.suppress:
            done = "too many" if too_many else _take_in(judged, store, policy, when, added)
        recorded = False
        if store is not None and judged.state == "bounced" and report.original_message_id:
            # The outbox's story of the message ends with the bounce: `outbox show`
            # must not say "delivered" for a recipient the relay later bounced.
            recorded = store.record_report(
                report.original_message_id, judged.recipient, _bounce_attempt(judged, when)
            )
        v = replace(judged, suppression=done, recorded=recorded)
        verdicts.append(v)
        suppressed = done == "added"
        events.dsn(
            v.state,
            source=source,
            original_message_id=report.original_message_id,
            recipient=events.show_recipient(v.recipient, "mask"),
            domain=events.recipient_domain(v.recipient),
            dsn_action=v.dsn_action,
            reason=v.verdict.reason,
            code=v.verdict.code,
            status=v.verdict.status,
            suppress=v.suppress,
            suppressed=suppressed,
            recorded=recorded,
            rule=v.verdict.rule,
            policy=policy.name,
        )
    return verdicts
