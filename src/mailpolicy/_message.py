"""Turn an ``email.message.Message`` into the exact bytes and envelope to send, once.

Serialised once and reused on every retry (research/perf-baselines.md: serialisation
dominates smtplib's client cost): CRLF line endings only (no bare CR or LF anywhere:
SMTP smuggling), dot-stuffed, Bcc removed from the data, a stable Message-ID (added
when missing and kept across retries), and no CR/LF/NUL inside any header value
(header injection).
"""

from __future__ import annotations

import copy
import email.encoders
import email.policy
import email.utils
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import Message
from email.parser import BytesParser
from email.policy import EmailPolicy, Policy
from typing import Any, Final

import idna

from ._address import a_label
from ._errors import MessageError

_EOL: Final = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT: Final = re.compile(rb"(?m)^\.")
_FOLD: Final = re.compile(r"\r?\n[ \t]")
_BAD_IN_HEADER: Final = re.compile(r"[\r\n\x00]")
_MSGID_DOMAIN: Final = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")
# Bcc and Resent-Bcc (RFC 5322 §3.6.6) never go out in the data, as smtplib's own
# send_message removes both.
_BCC_LINE: Final = re.compile(rb"(?im)^(?:resent-)?bcc:.*\r\n(?:[ \t].*\r\n)*")
#: A header line over 998 octets (RFC 5322 §2.1.1); the first line has no LF before it.
_LONG_HEADER_LINE: Final = re.compile(rb"(?:\A|\n)([^\r\n]{999})")


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A message ready for the wire.

    ``envelope_from`` and ``recipients`` are as the user gave them (recipients in order,
    exact duplicates removed); ``data`` is the CRLF-normalised message without Bcc,
    ending in CRLF; ``wire_data`` the same dot-stuffed with the final ``.`` line, as
    sent after DATA. ``eight_bit`` asks for ``BODY=8BITMIME``, ``smtputf8`` says the
    headers carry UTF-8 that needs ``SMTPUTF8``.
    """

    message_id: str
    envelope_from: str
    recipients: tuple[str, ...]
    data: bytes
    wire_data: bytes
    eight_bit: bool
    smtputf8: bool


def wire_bytes(data: bytes) -> bytes:
    """CRLF-normalised message bytes as sent after DATA: dot-stuffed (RFC 5321 §4.5.2)
    and ended with the final ``.`` line."""
    return _LEADING_DOT.sub(b"..", data) + b".\r\n"


#: RFC 5321 §4.5.3.1.6: a line of text is at most 1000 octets, CRLF included. Anchored on
#: the line feed before it, so the search is linear (3 ms a megabyte), not quadratic.
_LONG_LINE: Final = re.compile(rb"\n[^\r\n]{999}")


def seven_bit(message: PreparedMessage) -> PreparedMessage | None:
    """The message re-encoded for a server that does not offer 8BITMIME, which may not be
    sent 8-bit data (RFC 6152 §3, RFC 5321 §2.4): each part holding 8-bit bytes is
    written as quoted-printable (text) or base64 (anything else), its bytes unchanged.
    None when that is not possible faithfully: 8-bit text with no declared charset."""
    data = _reencode_parts(message.data, _has_eight_bit)
    if data is None or not data.isascii():
        return None
    return replace(message, data=data, wire_data=wire_bytes(data), eight_bit=False)


def _reencode_parts(data: bytes, wants: Callable[[Message], bool]) -> bytes | None:
    """``data`` with every leaf part that ``wants`` says must change rewritten as
    quoted-printable (text) or base64 (anything else), its decoded bytes unchanged; None
    when a part cannot be (8-bit text without a declared charset, an unreadable part).
    Done part by part here, not by the email package's 7-bit generator, which follows
    the process-wide charset registry (Flask-Mail registers UTF-8 without a body
    encoding on import)."""
    try:
        parsed = BytesParser(policy=email.policy.default).parsebytes(data)
        for part in parsed.walk():
            if part.is_multipart() or not wants(part):
                continue
            raw = part.get_payload(decode=True)
            if not isinstance(raw, bytes):
                return None
            text = part.get_content_maintype() == "text"
            if text and not raw.isascii() and part.get_param("charset") is None:
                return None
            del part["Content-Transfer-Encoding"]
            part.set_payload(raw)
            if text:
                email.encoders.encode_quopri(part)
            else:
                email.encoders.encode_base64(part)
        out = io.BytesIO()
        BytesGenerator(out, policy=email.policy.default.clone(linesep="\r\n")).flatten(parsed)
    except Exception:
        return None
    return _EOL.sub(b"\r\n", out.getvalue())


def _has_eight_bit(part: Message) -> bool:
    payload = part.get_payload()
    return not (isinstance(payload, str) and payload.isascii())


def _has_long_line(part: Message) -> bool:
    payload = part.get_payload()
    return isinstance(payload, str) and any(len(line) > 998 for line in payload.splitlines())


_ENCODED_WORD: Final = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def split_addresses(text: str) -> list[str]:
    """The addr-specs of an address-list header, as the user wrote them.

    Python's parser rewrites some invalid forms (``two@@example.org`` becomes ``<>``);
    the outcome must name the address the user gave, so this tokenises the raw text:
    commas split at the top level (not inside quotes, angle brackets or comments), the
    part inside ``<...>`` is the address, comments are dropped, group names
    (``team: a@x, b@y;``) are skipped.
    """
    out: list[str] = []
    token: list[str] = []
    quoted = escaped = False
    angle = comment = 0
    # Where the token's angle-addr opens and closes: brackets outside quotes and
    # comments only ('"x <bob@evil>" ann@x' has none, its "<" being quoted text; taking
    # that put bob@evil in the envelope: twelfth review).
    spans: list[int] = []
    colon: int | None = None  # the first colon outside quotes, comments and brackets
    started = False  # an "@" or "[" outside quotes and comments: no group name now

    def flush() -> None:
        nonlocal colon, started
        joined = "".join(token)
        token.clear()
        if colon is not None:
            # A group name ends at its colon: "team: a@x", '"Team A": a@x' (a quoted
            # name dropped the first member: fourteenth review); not the colons of an
            # address literal "b@[IPv6:::1]" or of a quoted local part 'a."b:c"@x'.
            start = colon + 1
            joined = joined[start:]
            spans[:] = [i - start for i in spans if i >= start]
        colon, started = None, False
        raw = joined[spans[0] + 1 : spans[1]] if len(spans) >= 2 else joined.strip()
        if len(spans) >= 2 and raw.startswith("@") and ":" in raw:
            raw = raw.split(":", 1)[1]  # an obsolete source route: "<@r.org:bob@y.org>"
        spans.clear()
        raw = raw.strip().rstrip(";").strip()
        if raw:
            out.append(raw)

    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        i += 1
        if ch == "=" and not comment and not escaped:
            word = _ENCODED_WORD.match(text, i - 1)
            if word is not None:
                # An encoded word is display-name text, whatever it holds: a "<", a
                # quote or a comma in it is not syntax (fifteenth review: the envelope
                # went to an address inside one).
                token.extend(word.group())
                i = word.end()
                continue
        if comment:
            # Inside a comment only "\\", "(" and ")" mean anything, and nothing of it
            # is kept: a quote or a backslash there began a quoted string and moved an
            # address out of the comment (thirteenth review: the envelope went to it).
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == "(":
                comment += 1
            elif ch == ")":
                comment -= 1
            continue
        if escaped:
            escaped = False
        elif quoted:
            # A backslash escapes only inside a quoted string or a comment (RFC 5322
            # quoted-pair): outside, 'Ann \\"<b@y>" <a@x>' opens a quoted string at the
            # quote, and taking it as escaped sent to b@y (fourteenth review).
            if ch == "\\":
                escaped = True
            else:
                quoted = ch != '"'
        elif ch == '"':
            quoted = True
        elif ch == "(":
            comment += 1
            continue
        elif ch == ":" and not angle and colon is None and not started:
            colon = len(token)  # where a group name ends, if this entry has one
        elif ch in "@[" and not angle:
            started = True
        elif ch == "<":
            if not angle and not spans:
                spans.append(len(token))
            angle += 1
        elif ch == ">" and angle:
            angle -= 1
            if not angle and len(spans) == 1:
                spans.append(len(token))
        elif ch in ",;" and not angle:
            if ch == ";":
                token.append(ch)
            flush()
            continue
        token.append(ch)
    flush()
    return out


def _check_headers(message: Message) -> None:
    for part in message.walk():
        for key, value in part.raw_items():
            text = str(value)
            if not _BAD_IN_HEADER.search(text) and not _BAD_IN_HEADER.search(key):
                continue  # the common case: no CR, LF or NUL at all, not even a fold
            if _BAD_IN_HEADER.search(key) or _BAD_IN_HEADER.search(_FOLD.sub(" ", text)):
                raise MessageError(
                    f"header {key[:40]!r} contains CR, LF or NUL (header injection refused)"
                )


#: Headers whose addresses, if internationalised, make the message need SMTPUTF8.
_ADDRESS_HEADERS: Final = ("from", "sender", "reply-to", "to", "cc")
#: Every header prepare_message reads addresses from.
_ENVELOPE_HEADERS: Final = frozenset({*_ADDRESS_HEADERS, "bcc"})


def _header_addresses(message: Message) -> dict[str, list[str]]:
    """The addresses of every address header, by lower-case header name, parsed once."""
    found: dict[str, list[str]] = {}
    for key, value in message.raw_items():
        name = key.lower()
        if name in _ENVELOPE_HEADERS:
            found.setdefault(name, []).extend(_addresses_of(value))
    return found


def _addresses_of(value: object) -> list[str]:
    """The addr-specs of one header value as the user wrote them. A header set through
    ``EmailMessage`` is already parsed: its addresses are used unless the parser had to
    give up on one (``two@@example.org`` becomes ``<>``), in which case its parse tree
    still holds the original text; a raw string is tokenised here."""
    parsed = getattr(value, "addresses", None)  # email.headerregistry.AddressHeader
    if parsed is not None and not getattr(value, "defects", ()):
        specs = [a.addr_spec for a in parsed]
        if all(spec and spec != "<>" and "@" in spec for spec in specs):
            return specs
    tree = getattr(value, "_parse_tree", None)  # email.headerregistry.BaseHeader
    text = str(tree) if tree is not None else str(value)
    if tree is None:  # a parsed message's raw text: raw UTF-8 is kept as surrogates
        text = _unescaped(text) or text
    return split_addresses(_FOLD.sub(" ", text))


def _serialise(message: Message, *, utf8_addresses: bool) -> tuple[bytes, bool]:
    """The message's bytes, and whether they need SMTPUTF8. An address (not a display
    name) with non-ASCII characters in a header cannot be an RFC 2047 encoded-word (§5):
    such headers are written as raw UTF-8 for a server offering SMTPUTF8 (RFC 6532)."""
    policy: Policy = message.policy
    if not (isinstance(policy, EmailPolicy) and utf8_addresses):
        try:
            return message.as_bytes(policy=policy.clone(linesep="\r\n")), False
        except (UnicodeEncodeError, UnicodeError):
            pass
        except Exception as exc:  # the email package raises many types here
            raise MessageError(f"the message cannot be serialised: {exc}") from exc
    if not isinstance(policy, EmailPolicy):
        raise MessageError("the message has non-ASCII headers that compat32 cannot serialise")
    try:
        # Non-ASCII that RFC 2047 cannot carry (an internationalised address in a
        # header): only a server offering SMTPUTF8 (RFC 6532) can take it.
        return message.as_bytes(policy=policy.clone(linesep="\r\n", utf8=True)), True
    except Exception as exc:  # the email package raises many types here
        raise MessageError(f"the message cannot be serialised: {exc}") from exc


def _unescaped(value: str) -> str | None:
    """A parsed header's raw text with raw UTF-8 (kept by the parser as surrogate
    escapes, RFC 6532 headers) decoded; None when the bytes are not UTF-8."""
    if value.isascii():
        return value
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return None


def _with_a_label_domains(message: Message) -> Message | None:
    """A copy of ``message`` whose address headers (From, Sender, Reply-To, To, Cc) have
    their non-ASCII domains as IDNA 2008 A-labels, when that is all that is not ASCII in
    their addresses; None when it is not (a non-ASCII local part needs SMTPUTF8), for a
    compat32 message, a group or a defect. Every such header line is rewritten in place
    (a parsed message may hold two To lines). The original is left untouched; the copy
    shares its body."""
    policy = message.policy
    if not isinstance(policy, EmailPolicy):
        return None
    raw: list[tuple[str, Any]] = message._headers  # type: ignore[attr-defined]
    rewritten: dict[int, tuple[str, Any]] = {}
    for index, (name, value) in enumerate(raw):
        if name.lower() not in _ADDRESS_HEADERS:
            continue
        # Parsed messages keep the raw text, raw UTF-8 as surrogate escapes (RFC 6532
        # headers); the registry's parse of the decoded text gives the addresses.
        text = _unescaped(value) if isinstance(value, str) else value
        if text is None:
            return None
        header = policy.header_fetch_parse(name, text)
        groups = getattr(header, "groups", None)
        if groups is None or header.defects:
            return None
        if all(a.addr_spec.isascii() for g in groups for a in g.addresses):
            continue
        addresses: list[Address] = []
        for group in groups:
            if group.display_name is not None:
                return None
            for a in group.addresses:
                if not a.username.isascii():
                    return None
                try:
                    domain = a_label(a.domain)
                except idna.IDNAError:
                    return None
                addresses.append(
                    Address(display_name=a.display_name, username=a.username, domain=domain)
                )
        rewritten[index] = policy.header_store_parse(name, addresses)
    if not rewritten:
        return None
    changed = copy.copy(message)
    changed._headers = [rewritten.get(i, item) for i, item in enumerate(raw)]  # type: ignore[attr-defined]
    return changed


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def prepare_message(
    message: Message,
    *,
    envelope_from: str | None = None,
    recipients: Iterable[str] | None = None,
) -> PreparedMessage:
    """Serialise ``message`` once and work out its envelope (DESIGN.md §4).

    Without an explicit envelope the sender comes from Sender, else From, and the
    recipients from To, Cc and Bcc, as written in the headers.
    """
    if not isinstance(message, Message):
        raise MessageError(f"expected an email.message.EmailMessage, not {type(message).__name__}")
    try:
        _check_headers(message)
        addresses = _header_addresses(message)
    except MessageError:
        raise
    except Exception as exc:  # a hand-built compat32 tree: an int header, a str payload
        raise MessageError(f"the message cannot be read: {type(exc).__name__}: {exc}") from exc
    if envelope_from is None:
        found = [*addresses.get("sender", ()), *addresses.get("from", ())]
        if not found:
            raise MessageError("the message has no From or Sender address, and no envelope_from")
        envelope_from = found[0]
    elif not isinstance(envelope_from, str):
        raise MessageError("envelope_from must be a str")
    if recipients is None:
        recipients = [*addresses.get("to", ()), *addresses.get("cc", ()), *addresses.get("bcc", ())]
    else:
        # Taken as a tuple first: a generator would be used up by the check below.
        if isinstance(recipients, str | bytes):
            raise MessageError("recipients must be a list of str, not one str")
        try:
            recipients = tuple(recipients)
        except TypeError:
            raise MessageError(
                f"recipients must be a list of str, not {type(recipients).__name__}"
            ) from None
        if not all(isinstance(r, str) for r in recipients):
            raise MessageError("recipients must be a list of str")
    unique = _unique(recipients)
    if not unique:
        raise MessageError("the message has no recipients (To, Cc, Bcc or recipients=)")

    utf8_addresses = any(
        not a.isascii() for name in _ADDRESS_HEADERS for a in addresses.get(name, ())
    )
    if utf8_addresses:
        # Only the domains not ASCII ("user@bücher.de"): written as A-labels, the headers
        # need no SMTPUTF8 (RFC 5890; an encoded-word may not stand in an addr-spec).
        try:
            ascii_domains = _with_a_label_domains(message)
        except Exception:  # the email package's header parser failing on odd syntax
            # ("team: a@x; b@y": AttributeError in CPython 3.11-3.13; fifteenth review)
            ascii_domains = None
        if ascii_domains is not None:
            message, utf8_addresses = ascii_domains, False
    data, smtputf8 = _serialise(message, utf8_addresses=utf8_addresses)
    data = _EOL.sub(b"\r\n", data)
    head_end = data.find(b"\r\n\r\n")
    head, body = (data, b"") if head_end < 0 else (data[: head_end + 2], data[head_end + 2 :])
    head = _BCC_LINE.sub(b"", head)
    existing = message.get("Message-ID")
    if existing:
        message_id = _FOLD.sub(" ", str(existing)).strip()
    else:
        # The sender's domain if it is a plain ASCII host name; never getfqdn() (slow).
        domain = envelope_from.rpartition("@")[2].strip(">").lower()
        if not _MSGID_DOMAIN.fullmatch(domain):
            domain = "mailpolicy.invalid"
        message_id = email.utils.make_msgid(domain=domain)
        head = b"Message-ID: " + message_id.encode("ascii") + b"\r\n" + head
    long_header = _LONG_HEADER_LINE.search(head)
    if long_header is not None:
        # Servers refuse it ("500 5.5.2 Line too long") after MAIL and RCPT succeeded,
        # as a permanent failure of every recipient (fuzz review): said now instead.
        # The header it belongs to: the last line before it that is not a continuation.
        start = long_header.start(1)
        while start > 0 and head[start : start + 1] in (b" ", b"\t"):
            start = head.rfind(b"\n", 0, start - 1) + 1
        name = head[start : head.find(b":", start, start + 80)].decode("ascii", "replace")
        where = f"header {name}" if name and ":" not in name else "a header"
        raise MessageError(
            f"{where} has a line longer than 998 octets (RFC 5322 §2.1.1), which servers "
            "refuse; fold it at white space, or shorten it"
        )
    data = head + body
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if _LONG_LINE.search(data, len(head) - 1):  # from the CRLF that ends the header
        # A body line over 998 octets (a hand-built legacy message: EmailMessage's
        # set_content encodes such text itself) would be cut or refused by servers.
        shorter = _reencode_parts(data, _has_long_line)
        if shorter is None or _LONG_LINE.search(shorter):
            raise MessageError(
                "the message has a line longer than 998 octets (RFC 5321 §4.5.3.1.6) "
                "that cannot be re-encoded; use EmailMessage.set_content, which encodes it"
            )
        data = shorter
    wire_data = wire_bytes(data)
    return PreparedMessage(
        message_id=message_id,
        envelope_from=envelope_from,
        recipients=unique,
        data=data,
        wire_data=wire_data,
        eight_bit=not data.isascii(),
        smtputf8=smtputf8,
    )
