"""Pre-validation of envelope addresses, before any SMTP command names them.

Three modes (the policy's ``[address] mode``; DESIGN.md §4):

``"strict"``
    email-validator's own verdict, with every option passed explicitly (never through
    its module globals, which are process-wide: research/validation-security.md §A3):
    syntax only unless ``check_deliverability``; no quoted local parts, no domain
    literals, no display names.
``"syntax"`` (the default)
    ``strict`` plus two documented allowances that real applications need: local or
    dotless domains (Django's defaults send from ``webmaster@localhost``), and domains
    already written as IDNA 2008 A-labels that email-validator refuses for its own
    stricter Unicode rules (e.g. ZWJ/ZWNJ that IDNA 2008's CONTEXTJ allows).
``"off"``
    only the checks no mode may skip.

Checks no mode skips: the address is a str of at most :data:`MAX_ADDRESS` characters,
has an ``@`` with something on both sides (RFC 5321 requires a domain), and contains no
CR, LF, NUL or other control characters (SMTP command injection).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

import email_validator
import idna

from ._errors import InvalidInputError

AddressMode = Literal["strict", "syntax", "off"]
ADDRESS_MODES: Final[tuple[AddressMode, ...]] = ("strict", "syntax", "off")

#: Longest input handed to the validator (RFC 5321 caps a path at 256 octets; longer
#: inputs only cost time: research/validation-security.md §A2).
MAX_ADDRESS: Final = 320

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Outside the validator's checks (mode "off", allow_domains) an address still may not
# carry what would end the path or add ESMTP parameters on the wire: "RCPT TO:<x>
# NOTIFY=NEVER <y@z>" (research/validation-security.md part B).
_PATH_BREAKERS = re.compile(r"[<>\s\"\\]")
# ... nor what makes it another path: a second "@" or a route ("@relay:bob@x", RFC 5321
# §4.1.2 source routes, which relays may honour), or a list ("a@b,c@x").
_ROUTE_BREAKERS = re.compile(r"[@,:;]")
_LDH_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_RTL: Final = frozenset({"R", "AL", "AN"})  # right-to-left bidi classes (RFC 5893 §1.4)
_SPECIAL_USE_NOT_LOCAL: Final = frozenset(email_validator.SPECIAL_USE_DOMAIN_NAMES) - {"localhost"}


@dataclass(frozen=True, slots=True)
class CheckedAddress:
    """The verdict on one address.

    ``wire`` is the form to put in MAIL FROM / RCPT TO (A-label domain; the local part
    NFC-normalised), None when refused. ``smtputf8`` says the wire form needs a server
    that offers SMTPUTF8 (a non-ASCII local part). ``error`` says why it was refused.
    ``allowance`` names the syntax-mode allowance that let it pass, if any.
    """

    original: str
    wire: str | None
    smtputf8: bool = False
    error: str | None = None
    allowance: str | None = None

    @property
    def ok(self) -> bool:
        return self.wire is not None


def a_label(domain: str) -> str:
    """``domain`` as it goes on the wire: an ASCII name as it is, a Unicode one as IDNA
    2008 A-labels (UTS 46 mapping first, as email-validator does). The one place that
    says how; the sender, the suppression list, DSN intake and the header rewrite all
    use it. Raises ``idna.IDNAError`` for a name IDNA 2008 refuses."""
    if domain.isascii():
        return domain
    return idna.encode(domain, uts46=True).decode("ascii")


def _refuse(address: str, why: str) -> CheckedAddress:
    return CheckedAddress(original=address, wire=None, error=why)


def _validate(address: str, *, deliverability: bool) -> email_validator.ValidatedEmail:
    return email_validator.validate_email(
        address,
        check_deliverability=deliverability,
        allow_smtputf8=True,
        allow_quoted_local=False,
        allow_domain_literal=False,
        allow_display_name=False,
        allow_empty_local=False,
        globally_deliverable=True,
        test_environment=False,
        strict=False,
    )


def _is_ldh_hostname(domain: str) -> bool:
    if not domain or len(domain) > 253 or not domain.isascii():
        return False
    return all(_LDH_LABEL.fullmatch(label) for label in domain.lower().split("."))


def _allowance(local: str, domain: str) -> tuple[str, str] | None:
    """The syntax-mode allowance for ``local@domain``, if one applies: ``(name, wire)``."""
    lowered = domain.lower()
    if not _is_ldh_hostname(domain):
        return None
    if "." in domain and lowered != "localhost" and not lowered.endswith(".localhost"):
        if not any(label.startswith("xn--") for label in lowered.split(".")):
            return None
        try:
            # IDNA 2008 (the idna package, as email-validator itself uses), CONTEXTJ
            # included; the A-label must round-trip unchanged.
            unicode_domain = idna.decode(lowered)
            if idna.encode(unicode_domain).decode("ascii") != lowered:
                return None
            # The idna package checks the Bidi Rule per label; RFC 5893 §2 applies it to
            # every label once one label is right-to-left ("1.xn--4dbc.com" reads like
            # "xn--4dbc.1.com"), as email-validator does (syntax.py) for the names it sees.
            if any(unicodedata.bidirectional(c) in _RTL for c in unicode_domain):
                for label in unicode_domain.split("."):
                    idna.check_bidi(label, check_ltr=True)
        except idna.IDNAError:
            return None
        name = "a-label-domain"
    else:
        # A dotless intranet name (or localhost); not the other special-use names of
        # RFC 6761 / email-validator (test, invalid, local, onion, arpa): mail to them
        # goes nowhere, as email-validator says for their subdomains.
        if lowered in _SPECIAL_USE_NOT_LOCAL:
            return None
        name = "local-domain"
    # The local part must pass on its own: check it against a neutral domain.
    try:
        checked = _validate(f"{local}@example.com", deliverability=False)
    except email_validator.EmailNotValidError:
        return None
    local_wire = checked.ascii_local_part or checked.local_part
    return name, f"{local_wire}@{lowered}"


def domain_matches(domain: str, patterns: Iterable[str]) -> bool:
    """Whether a (lower-case) ``domain`` is one of ``patterns``, or under a ``*.parent``
    one (not the parent itself): how ``[address] allow_domains`` and
    ``[[destinations]] domains`` both match."""
    for pattern in patterns:
        if pattern.startswith("*."):
            if domain.endswith(pattern[1:]):
                return True
        elif domain == pattern:
            return True
    return False


def _domain_allowed(domain: str, allow_domains: frozenset[str] | set[str]) -> bool:
    if not allow_domains:
        return False
    lowered = domain.lower().rstrip(".")
    if "*" in lowered:  # a pattern is not a domain: "ops@*.corp.local" is no address
        return False
    return domain_matches(lowered, allow_domains)


def check_address(
    address: object,
    *,
    mode: AddressMode = "syntax",
    check_deliverability: bool = False,
    allow_domains: frozenset[str] = frozenset(),
) -> CheckedAddress:
    """Pre-validate one envelope address (see the module docstring for the modes).

    ``allow_domains`` lists domains accepted in any mode without the validator's
    verdict (an internal relay's domain, say); the hygiene checks still apply.
    """
    if mode not in ADDRESS_MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(ADDRESS_MODES)}, not {mode!r}")
    if not isinstance(allow_domains, frozenset | set | tuple | list) or not all(
        isinstance(d, str) for d in allow_domains
    ):
        raise InvalidInputError(
            f"allow_domains must be a set of domain names, not {type(allow_domains).__name__}"
        )
    if not isinstance(address, str):
        return _refuse(repr(address), f"an address must be a str, not {type(address).__name__}")
    if len(address) > MAX_ADDRESS:
        return _refuse(address, f"the address is longer than {MAX_ADDRESS} characters")
    if _CONTROL.search(address):
        return _refuse(address, "the address contains a control character (CR, LF, NUL...)")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return _refuse(address, "an address needs a local part, an @-sign and a domain")
    if mode == "off" or _domain_allowed(domain, allow_domains):
        if _PATH_BREAKERS.search(address):
            return _refuse(
                address, "the address contains a space, a quote, a backslash or angle brackets"
            )
        if _ROUTE_BREAKERS.search(local):
            return _refuse(
                address, "the local part contains '@', ',', ':' or ';' (a route or a list)"
            )
        local = unicodedata.normalize("NFC", local)
        smtputf8 = not local.isascii()
        try:
            domain = a_label(domain)
        except idna.IDNAError as exc:
            return _refuse(address, f"the domain is not a valid IDNA 2008 name: {exc}")
        return CheckedAddress(original=address, wire=f"{local}@{domain}", smtputf8=smtputf8)
    try:
        v = _validate(address, deliverability=check_deliverability)
    except email_validator.EmailNotValidError as exc:
        if mode == "syntax" and isinstance(exc, email_validator.EmailSyntaxError):
            allowed = _allowance(local, domain)
            if allowed is not None:
                name, wire = allowed
                return CheckedAddress(
                    original=address, wire=wire, smtputf8=not wire.isascii(), allowance=name
                )
        return _refuse(address, str(exc))
    if v.ascii_email is not None:
        return CheckedAddress(original=address, wire=v.ascii_email)
    # A non-ASCII local part: only a server offering SMTPUTF8 (RFC 6531) can take it.
    return CheckedAddress(original=address, wire=f"{v.local_part}@{v.ascii_domain}", smtputf8=True)


@functools.lru_cache(maxsize=4096)
def check_address_cached(
    address: str, mode: AddressMode, allow_domains: frozenset[str]
) -> CheckedAddress:
    """:func:`check_address` without DNS, remembered: a syntax verdict never changes and
    :class:`CheckedAddress` is immutable, while email-validator costs ~35 us an address
    (research/validation-security.md §A2) - most of a send's CPU for short messages."""
    return check_address(address, mode=mode, allow_domains=allow_domains)
