"""Turn an SMTP reply, or a network-level failure, into a :class:`Verdict`.

The precedence (DESIGN.md §2; evidence in shared/research/classification.md §4.2):

1. The reply-code class governs ``kind``: 2xx success, 4xx transient, 5xx permanent. A
   class conflict with the enhanced status (``550 4.4.7``) keeps the reply class and uses
   the status only for the reason (Postfix's smtp_chat.c does the same). The exception
   RFC 5321 §4.5.3.1.10 requires: a 552 meaning "too many recipients" is transient.
2. The reason comes from the most specific evidence: provider and phrase rules, then the
   enhanced status table, then reply-code defaults, then ``unknown``.
3. ``suppress`` only on recipient evidence: permanent, a dead-address reason, at the RCPT
   stage, after the final dot, or at an unknown stage. Never at MAIL.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from ._errors import InvalidInputError
from ._policy import Decision, Policy
from ._policy_load import load_policy
from ._reply import ParsedReply, parse_reply
from ._rules import Rule, RuleSet, first_rule, load_builtin_rules, words_of
from ._vocab import (
    DEAD_ADDRESS_REASONS,
    RECIPIENT_STAGES,
    SESSION_STAGES,
    STAGES,
    Kind,
    Reason,
    Scope,
    Stage,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What one reply means and what the default policy does about it.

    ``code`` and ``status`` are what the server said (None when it said none; a status
    is never invented). ``kind`` is success / transient / permanent, ``reason`` a name
    from the taxonomy, ``retry`` and ``suppress`` the default policy's decisions,
    ``scope`` what the failure is about (recipient, message or relay), ``retry_after``
    the delay in seconds the server announced, ``rule`` the id of the deciding rule and
    ``stage`` the SMTP stage the reply answered (given, or read from the text).
    ``action`` is the default policy's action (``retry``, ``defer``, ``throttle``,
    ``rebatch``, ``bounce``, ``suppress``, ``hold``, or ``deliver``); ``attributed`` is
    False when a dead-address reason cannot be tied to this recipient (a quoted "user
    unknown" at an unknown stage without an addressing status), which never suppresses.
    """

    code: int | None
    status: str | None
    kind: Kind
    reason: Reason
    retry: bool
    suppress: bool
    scope: Scope
    retry_after: int | None
    rule: str
    stage: Stage | None
    action: str = ""
    attributed: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field."""
        return asdict(self)


# Reasons whose failure concerns the relay (our connection, our IP, our credentials).
_RELAY_REASONS: Final[frozenset[Reason]] = frozenset(
    {
        "service_unavailable",
        "rate_limited",
        "policy_blocked",
        "relay_denied",
        "auth_required",
        "auth_failed",
        "tls_required",
        "tls_failed",
        "network_error",
        "timeout",
    }
)
_RECIPIENT_REASONS: Final[frozenset[Reason]] = DEAD_ADDRESS_REASONS | {
    "mailbox_full",
    "greylisted",
    "too_many_recipients",
}
# The kind a reason implies when the text carries no code and no status (DSN prose).
_PERMANENT_BY_NATURE: Final[frozenset[Reason]] = DEAD_ADDRESS_REASONS | {
    "content_rejected",
    "message_too_large",
    "sender_rejected",
    "relay_denied",
}
_TRANSIENT_BY_NATURE: Final[frozenset[Reason]] = frozenset(
    {"greylisted", "rate_limited", "service_unavailable", "network_error", "timeout"}
)
_PERMANENT_WORDS: Final = frozenset({"permanent", "permanently", "fatal", "unrecoverable"})
_TRANSIENT_WORDS: Final = frozenset({"temporary", "temporarily", "transient", "deferred", "later"})
_CLASS_KIND: Final[dict[str, Kind]] = {
    "2": "success",
    "3": "success",
    "4": "transient",
    "5": "permanent",
}

RULES: Final[RuleSet] = load_builtin_rules()


#: The enhanced statuses that back a generic phrase for a dead address quoted at an
#: unknown stage ("1.*" = any addressing status). A domain that does not resolve is not
#: among them: no filter answers "host unknown", so its phrases stand on their own.
_BACKING_STATUSES: Final[dict[str, frozenset[str]]] = {
    "mailbox_unknown": frozenset({"1.*"}),
    "mailbox_moved": frozenset({"1.*"}),
    "mailbox_disabled": frozenset({"1.*", "2.*", "7.13"}),
}


def _backed(status: str | None, backing: frozenset[str]) -> bool:
    if status is None:
        return False
    _, subject, detail = status.split(".")
    return f"{subject}.*" in backing or f"{subject}.{detail}" in backing


def _scope(reason: Reason, stage: Stage | None) -> Scope:
    if stage in SESSION_STAGES or reason in _RELAY_REASONS:
        return "relay"
    if reason in _RECIPIENT_REASONS or stage == "rcpt":
        return "recipient"
    return "message"


_DEFAULT_POLICY: list[Policy] = []


def default_policy() -> Policy:
    """The shipped ``default`` policy, loaded on first use: the one source of
    ``Verdict.retry``, ``suppress`` and ``action`` (no second decision table)."""
    if not _DEFAULT_POLICY:
        _DEFAULT_POLICY.append(load_policy("default"))
    return _DEFAULT_POLICY[0]


def _check_stage(stage: object) -> Stage | None:
    if stage is None or stage in STAGES:
        return stage
    raise InvalidInputError(f"unknown SMTP stage {stage!r}; expected one of {', '.join(STAGES)}")


def _check_rules(rules: object) -> RuleSet | None:
    if rules is None or isinstance(rules, RuleSet):
        return rules
    raise InvalidInputError(
        f"rules must be a RuleSet (a policy's classifier) or None, not {type(rules).__name__}"
    )


def _check_host(host: object) -> str:
    if host is None:
        return ""
    if isinstance(host, str):
        return host.lower().rstrip(".")
    raise InvalidInputError(f"host must be a str, not {type(host).__name__}")


def classify(
    reply: str | bytes | bytearray | memoryview,
    *,
    stage: Stage | None = None,
    host: str | None = None,
    rules: RuleSet | None = None,
) -> Verdict:
    """Classify one SMTP reply (or a bounce diagnostic quoting one).

    ``reply`` is the text as the server sent it (one or more lines, ``NNN-``
    continuation lines, ``\\r\\n`` or ``\\n``), str or bytes. ``stage`` is the command it
    answered when known; ``host`` the MX or relay host name (provider rules key on it).
    Never raises on the content of ``reply``; raises :class:`InvalidInputError` for
    arguments of the wrong type.
    """
    stage = _check_stage(stage)
    host_name = _check_host(host)
    rules = _check_rules(rules)
    parsed = parse_reply(reply, want_stage=stage is None)
    return classify_parsed(parsed, stage=stage, host=host_name, rules=rules)


def classify_parsed(
    parsed: ParsedReply, *, stage: Stage | None, host: str, rules: RuleSet | None = None
) -> Verdict:
    """Classify an already parsed reply; ``stage``/``host`` override the text's hints."""
    ruleset = RULES if rules is None else rules
    stage = stage if stage is not None else parsed.stage
    # The reporting host named in a diagnostic is read only when a provider rule keyed
    # on hosts is examined (most texts never reach one).
    host_unknown = not host and ruleset.needs_host
    code = parsed.code
    status = parsed.status
    code_s = "" if code is None else str(code)
    status_s = status or ""
    if code_s[:1] in ("2", "3") or (code is None and status_s[:1] == "2"):
        # Success needs no rule: the reply class decides (the common case, kept cheap).
        return success_verdict(code, status, stage)

    status_rule: Rule | None = None
    if status is not None and status[0] != "2":
        _, subject, detail = status.split(".")
        table = ruleset.status_table
        status_rule = first_rule(
            table.get(f"{subject}.{detail}", ()), code_s, status_s, stage, host
        ) or first_rule(table.get(f"{subject}.*", ()), code_s, status_s, stage, host)
    # A weak (generic phrase) rule yields to a firm enhanced status: "550 5.1.1" with a
    # stray "Return-Path:" in a quoted DSN is still an unknown user.
    firm_status = status_rule is not None and status_rule.firm
    # A security or policy status (X.7.x; X.7.13 is a disabled recipient account) says a
    # policy refused us: a generic dead-address phrase beside it may name our own account,
    # user or sender ("550 5.7.1 Sender account does not exist"), and such a reply would
    # answer every RCPT alike. The status decides, not the phrase.
    policy_status = status_s[2:4] == "7." and status_s[4:] != "13"

    rule: Rule | None = None
    words = words_of(parsed.lowered)
    candidates = ruleset.candidates(frozenset(words))
    if candidates:
        joined = " " + " ".join(words) + " "
        text_rules = ruleset.text_rules
        examined, applies = -1, False  # the rule last examined, and whether it applies
        for i, phrase in candidates:
            if i != examined:
                examined = i
                r = text_rules[i]
                if r.weak and (firm_status or (policy_status and r.reason in DEAD_ADDRESS_REASONS)):
                    applies = False
                    continue
                if r.hosts and host_unknown:
                    host, host_unknown = parsed.host_hint() or "", False
                applies = r.applies(code_s, status_s, stage, host)
            if applies and phrase.found_in(joined):
                rule = text_rules[i]
                break
    if rule is None:
        rule = status_rule
    if rule is None and code is not None:
        rule = first_rule(
            ruleset.code_table.get(code_s, ()), code_s, status_s, stage, host
        ) or first_rule(ruleset.code_table.get(f"{code_s[0]}xx", ()), code_s, status_s, stage, host)

    if code is not None:
        kind = _CLASS_KIND[code_s[0]]
    elif status is not None:
        kind = _CLASS_KIND[status[0]]
    elif rule is not None and rule.reason in _PERMANENT_BY_NATURE:
        kind = "permanent"
    elif rule is not None and rule.reason in _TRANSIENT_BY_NATURE:
        kind = "transient"
    elif _PERMANENT_WORDS.intersection(words):
        kind = "permanent"
    else:
        # Nothing says it is final: RFC 5321 §3.8 treats a reply-less failure as 451.
        kind = "transient"

    if kind == "success":
        reason: Reason = "delivered"
        rule_id = "code.2xx" if code is not None else "status.2xx"
        scope: Scope = "recipient" if stage in RECIPIENT_STAGES else "message"
    else:
        if rule is None:
            reason, rule_id = "unknown", "fallback.unknown"
        else:
            reason, rule_id = rule.reason, rule.id
            if rule.kind is not None:
                kind = rule.kind
        if stage == "mail" and reason in DEAD_ADDRESS_REASONS:
            # An address refused at MAIL FROM is our sender address (DESIGN.md §2 rule 3).
            reason, rule_id = "sender_rejected", f"{rule_id}+stage.mail"
        scope = rule.scope if rule is not None and rule.scope is not None else _scope(reason, stage)
    # Recipient evidence (DESIGN.md §2 rule 3). At RCPT a generic "user unknown" phrase
    # names the recipient being refused, and a relay's own statement (no reply code: the
    # relay is the one that knows the mailbox) is its verdict. But a remote reply quoted
    # at an unknown stage (a bounce's diagnostic) may have come after DATA, where "user
    # unknown" is a filter's answer (Japanese carriers; Sisimai's "filtered"): there a
    # generic phrase needs an addressing status (X.1.x) or a provider rule to back it.
    attributed = not (
        reason in _BACKING_STATUSES
        and stage is None
        and code is not None
        and rule is not None
        and rule.weak
        and not _backed(status, _BACKING_STATUSES[reason])
    )
    decision = default_policy().decide(
        kind=kind,
        reason=reason,
        code=code,
        status=status,
        stage=stage,
        text=parsed.text,
        attributed=attributed,
    )
    return Verdict(
        code=code,
        status=status,
        kind=kind,
        reason=reason,
        retry=decision.retry,
        suppress=decision.suppress,
        scope=scope,
        retry_after=parsed.retry_after() if decision.retry else None,
        rule=rule_id,
        stage=stage,
        action=decision.action,
        attributed=attributed,
    )


def decide_on(
    policy: Policy, verdict: Verdict, *, text: str, domain: str | None = None
) -> Decision:
    """What ``policy`` does about a verdict: every field the policy's rules may look at,
    passed in one place (the sender, the DSN judge and ``policy explain`` use it)."""
    return policy.decide(
        kind=verdict.kind,
        reason=verdict.reason,
        code=verdict.code,
        status=verdict.status,
        stage=verdict.stage,
        text=text,
        domain=domain,
        attributed=verdict.attributed,
    )


def success_verdict(code: int | None, status: str | None, stage: Stage | None) -> Verdict:
    """The verdict of a 2xx (or 3xx) reply: no rule is needed, the class decides."""
    return Verdict(
        code=code,
        status=status,
        kind="success",
        reason="delivered",
        retry=False,
        suppress=False,
        scope="recipient" if stage in RECIPIENT_STAGES else "message",
        retry_after=None,
        rule="code.2xx" if code is not None else "status.2xx",
        stage=stage,
        action="deliver",
    )


def _network_verdict(reason: Reason, kind: Kind, rule: str, stage: Stage | None) -> Verdict:
    decision = default_policy().decide(
        kind=kind, reason=reason, code=None, status=None, stage=stage
    )
    return Verdict(
        code=None,
        status=None,
        kind=kind,
        reason=reason,
        retry=decision.retry,
        suppress=decision.suppress,
        scope="relay",
        retry_after=None,
        rule=rule,
        stage=stage,
        action=decision.action,
    )


def classify_error(
    exc: BaseException, *, stage: Stage | None = None, rules: RuleSet | None = None
) -> Verdict:
    """Classify a failure that may have no reply: refused, reset, timeout, TLS, DNS, or
    an ``smtplib`` exception (whose reply, if any, is classified as by :func:`classify`,
    with ``rules`` if given: a policy's ``classifier``).
    """
    if not isinstance(exc, BaseException):
        raise InvalidInputError(f"classify_error takes an exception, not {type(exc).__name__}")
    stage = _check_stage(stage)
    rules = _check_rules(rules)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        # Every recipient was refused; each has its own reply. Report the first.
        refused = exc.recipients if isinstance(exc.recipients, dict) else {}
        for entry in refused.values():
            said, text = entry if isinstance(entry, tuple) and len(entry) == 2 else ("", entry)
            raw = text if isinstance(text, bytes) else str(text).encode("utf-8", "replace")
            return classify(f"{said} ".encode() + raw, stage=stage or "rcpt", rules=rules)
    code: object = getattr(exc, "smtp_code", None)
    if (
        isinstance(exc, smtplib.SMTPResponseException)
        and isinstance(code, int)
        and not isinstance(code, bool)
        and code > 0
    ):
        if isinstance(exc, smtplib.SMTPSenderRefused):
            stage = stage or "mail"
        elif isinstance(exc, smtplib.SMTPAuthenticationError):
            stage = stage or "auth"
        elif isinstance(exc, smtplib.SMTPHeloError):
            stage = stage or "ehlo"
        error = exc.smtp_error
        raw = error if isinstance(error, bytes) else str(error).encode("utf-8", "replace")
        return classify(f"{code} ".encode() + raw, stage=stage, rules=rules)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        # The server lacks an extension the configuration or the message requires.
        what = str(exc).lower()
        if stage == "auth" or "auth" in what:
            return _network_verdict("auth_failed", "permanent", "error.auth-not-offered", stage)
        if stage == "starttls" or "starttls" in what or "tls" in what:
            return _network_verdict("tls_failed", "permanent", "error.starttls-not-offered", stage)
        v = _network_verdict("protocol_error", "permanent", "error.extension-not-offered", stage)
        return replace(v, scope="message")
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return _network_verdict("tls_failed", "permanent", "error.tls", stage)
    if isinstance(exc, TimeoutError | socket.timeout):
        return _network_verdict("timeout", "transient", "error.timeout", stage)
    if isinstance(exc, socket.gaierror):
        return _network_verdict("network_error", "transient", "error.dns", stage)
    if isinstance(exc, ConnectionRefusedError):
        return _network_verdict("network_error", "transient", "error.refused", stage)
    if isinstance(exc, smtplib.SMTPServerDisconnected | ConnectionError | EOFError):
        # RFC 5321 §3.8: a connection that breaks without a reply counts as a 451.
        return _network_verdict("network_error", "transient", "error.disconnected", stage)
    if isinstance(exc, OSError):
        return _network_verdict("network_error", "transient", "error.os", stage)
    return _network_verdict("unknown", "transient", "error.unknown", stage)
