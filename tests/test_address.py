"""Address pre-validation: email-validator's verdicts exactly in strict mode, and only the
documented allowances on top in the default syntax mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mailpolicy import InvalidInputError
from mailpolicy._address import MAX_ADDRESS, check_address

CASES: list[dict[str, Any]] = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "address-cases.jsonl")
    .read_text(encoding="utf-8")
    .splitlines()
]


def test_corpus_is_the_expected_one() -> None:
    assert len(CASES) == 702
    assert sum(c["valid_syntax"] for c in CASES) == 125


@pytest.mark.parametrize("case", CASES, ids=[repr(c["address"])[:50] for c in CASES])
def test_strict_mode_is_email_validators_verdict(case: dict[str, Any]) -> None:
    """Strict mode accepts exactly what email-validator 2.4 accepts (with the corpus's
    options), puts its ``ascii_email`` on the wire, and needs SMTPUTF8 exactly when that
    form does not exist (the corpus README: decide from ``ascii_email is None``)."""
    got = check_address(case["address"], mode="strict")
    assert got.ok is case["valid_syntax"], got.error
    if got.ok:
        if case["ascii_email"] is not None:
            assert got.wire == case["ascii_email"]
            assert got.smtputf8 is False
        else:
            assert got.smtputf8 is True
            assert got.wire is not None
            assert got.wire.split("@")[0] == case["normalized"].rsplit("@", 1)[0]
        assert got.error is None
    else:
        assert got.error


def test_syntax_mode_differs_from_strict_only_by_the_allowances() -> None:
    """Every difference between the default mode and strict mode is an address that the
    default mode accepts under a named allowance; nothing strict accepts is refused."""
    differences = []
    for case in CASES:
        strict = check_address(case["address"], mode="strict")
        syntax = check_address(case["address"], mode="syntax")
        if strict.ok:
            assert syntax == strict
        elif syntax.ok:
            assert syntax.allowance in {"local-domain", "a-label-domain"}
            differences.append((case["address"], syntax.allowance))
    # The corpus holds dotless and localhost domains; they are the allowance at work.
    assert ("user@localhost", "local-domain") in differences
    assert ("test@io", "local-domain") in differences
    assert all(
        not a.endswith((".test", ".invalid", ".local", ".onion", ".arpa")) for a, _ in differences
    )


@pytest.mark.parametrize(
    "address",
    ["webmaster@localhost", "root@localhost", "app@mail.localhost", "ops@intranet"],
)
def test_local_domains_pass_by_default(address: str) -> None:
    """Django's defaults send from webmaster@localhost and root@localhost."""
    got = check_address(address)
    assert got.ok
    assert got.allowance == "local-domain"
    assert check_address(address, mode="strict").ok is False


def test_a_label_domain_valid_in_idna2008_passes_by_default() -> None:
    """An already-encoded A-label with a ZWJ after a virama (valid IDNA 2008, CONTEXTJ)
    is refused by email-validator's unsafe-character rule but sent in syntax mode."""
    import idna

    domain = idna.encode("\u0915\u094d\u200d\u0937.example").decode()  # क्‍ष: ZWJ after virama
    address = f"user@{domain}"
    assert check_address(address, mode="strict").ok is False
    got = check_address(address)
    assert (got.ok, got.allowance, got.wire) == (True, "a-label-domain", address)


@pytest.mark.parametrize("domain", ["1.xn--4dbc.com", "xn--4dbc.1.com", "xn--4dbc.1a.org"])
def test_a_label_allowance_applies_the_bidi_rule_across_labels(domain: str) -> None:
    """RFC 5893 §2: once a label is right-to-left, every label must pass the Bidi Rule
    ("1.xn--4dbc.com" is 1.אבג.com, displayed like אבג.1.com). The idna package checks
    each label alone, so the syntax-mode A-label allowance must not let these through
    where email-validator (strict) refuses them."""
    address = f"user@{domain}"
    assert check_address(address, mode="strict").ok is False
    got = check_address(address)
    assert (got.ok, got.allowance) == (False, None)
    assert got.error is not None
    assert "IDNA" in got.error


def test_an_rtl_a_label_domain_that_keeps_the_bidi_rule_still_passes() -> None:
    for address in ("user@xn--4dbc.com", "user@mail.xn--4dbc.com"):
        got = check_address(address)
        assert (got.ok, got.wire) == (True, address)


@pytest.mark.parametrize(
    "address",
    [
        "no-at-sign",
        "@example.org",
        "user@",
        "two@@example.org",
        "a\r\nRCPT TO:<evil@example.org>@example.org",
        "a@example.org\r\nDATA",
        "nul\x00@example.org",
        "x" * (MAX_ADDRESS + 1) + "@example.org",
        "user@example.test",
        "user@xn--.com",
    ],
)
def test_refused_in_every_mode_that_checks(address: str) -> None:
    """Injection attempts, missing parts and overlong inputs never reach the wire."""
    got = check_address(address)
    assert not got.ok
    assert got.error


@pytest.mark.parametrize(
    "address",
    [
        "no-at-sign",
        "a\r\n@example.org",
        "x@",
        "nul\x00@x.org",
        "x> NOTIFY=NEVER ORCPT=rfc822;a@b <y@corp",
        "a b@corp",
        '"quoted"@corp',
    ],
)
def test_off_mode_still_refuses_what_no_mode_may_send(address: str) -> None:
    """No SMTP command or ESMTP parameter injection through the unchecked paths."""
    assert not check_address(address, mode="off").ok
    assert not check_address(address, allow_domains=frozenset({"corp"})).ok


def test_smtputf8_decision() -> None:
    import idna

    got = check_address("用户@例子.广告")
    assert got.ok
    assert got.smtputf8
    assert got.wire == "用户@" + idna.encode("例子.广告").decode()
    idn = check_address("user@bücher.example")
    assert (idn.wire, idn.smtputf8) == ("user@xn--bcher-kva.example", False)


def test_allow_domains_and_non_str() -> None:
    assert check_address("x@corp", mode="strict", allow_domains=frozenset({"corp"})).ok
    assert not check_address(42).ok


@pytest.mark.parametrize(
    "address",
    ["victim@attacker.example@corp.internal", "@relay.example:bob@corp.internal",
     "a@b,c@corp.internal", "a;b@corp.internal"],
)  # fmt: skip
@pytest.mark.parametrize("how", ["off", "allow_domains"])
def test_routes_and_lists_never_pass_unvalidated(address: str, how: str) -> None:
    """Found in review: mode "off" and allow_domains let a second "@", a source route
    ("@relay:bob@x", which relays may honour) and a list reach RCPT TO."""
    if how == "off":
        checked = check_address(address, mode="off")
    else:
        checked = check_address(address, mode="strict", allow_domains=frozenset({"corp.internal"}))
    assert not checked.ok
    assert "a route or a list" in (checked.error or "")


def test_allow_domains_wildcards_match_subdomains_only() -> None:
    allowed = frozenset({"*.corp.local"})
    assert check_address("ops@mail.corp.local", mode="strict", allow_domains=allowed).ok
    assert not check_address("ops@corp.local", mode="strict", allow_domains=allowed).ok
    assert not check_address("ops@*.corp.local", mode="strict", allow_domains=allowed).ok


def test_unvalidated_local_parts_are_nfc_normalised_too() -> None:
    decomposed = "re\u0301ne\u0301@corp.internal"
    for checked in (
        check_address(decomposed, mode="off"),
        check_address(decomposed, mode="strict", allow_domains=frozenset({"corp.internal"})),
    ):
        assert checked.wire == "r\u00e9n\u00e9@corp.internal"


def test_bad_mode_or_allow_domains_is_an_invalid_input_error() -> None:
    with pytest.raises(InvalidInputError, match="mode must be one of"):
        check_address("a@example.org", mode="OFF")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="allow_domains must be a set"):
        check_address("a@example.org", allow_domains="example.com")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="allow_domains must be a set"):
        check_address("a@example.org", allow_domains=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("domain", ["test", "invalid", "local", "onion", "arpa"])
def test_the_local_domain_allowance_skips_special_use_names(domain: str) -> None:
    """Dotless intranet names and localhost pass in syntax mode; the other special-use
    names went through too (found in review), though mail to them goes nowhere."""
    assert not check_address(f"a@{domain}").ok
    assert check_address("webmaster@localhost").ok
    assert check_address("ops@mailhost").allowance == "local-domain"
