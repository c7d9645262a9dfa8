"""The conditions and actions of a policy: ``[[rules]]`` and ``[[destinations]]``.

``when`` keys (AND across keys, OR inside a list): ``stage`` (DESIGN.md stage names or
``"none"``), ``kind`` (``transient`` / ``permanent``), ``reason`` (the taxonomy),
``reply`` (``"421"``, ``"4xx"``, ``"45x"``, ``"none"``), ``enhanced`` (``"5.1.1"``,
``"5.7.*"``, ``"*.2.2"``, ``"4.7.5xx"``, ``"none"``) and ``text`` (a case-insensitive
regular expression, searched in the first :data:`~mailpolicy._policy.TEXT_SCAN`
characters of the reply).
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Final, cast

from . import _policy_fields as f
from ._errors import PolicyError
from ._policy import ACTIONS, TIMED_ACTIONS, CodePattern, PolicyRule, When
from ._vocab import REASONS, STAGES, Kind, Reason, Stage

_RULE_KEYS: Final = ("name", "when", "action", "schedule", "min_delay", "give_up_after", "pause")
_WHEN_KEYS: Final = ("stage", "kind", "reason", "reply", "enhanced", "text")
_DESTINATION_KEYS: Final = ("name", "domains", "inline", "queue", "suppression", "rules")
_REPLY: Final = re.compile(r"[2-5][0-9x]{2}")
_ENHANCED_PART: Final = re.compile(r"\*|[0-9x]{1,3}")


def _code_matcher(pattern: str, *, enhanced: bool, source: str, path: str) -> CodePattern:
    """``"421"``, ``"4xx"``, ``"45x"`` / ``"5.1.1"``, ``"5.7.*"``, ``"*.2.2"``, ``"4.7.5xx"``;
    ``"none"`` matches a reply without one."""
    if pattern == "none":
        return CodePattern(pattern, None)
    if enhanced:
        parts = pattern.split(".")
        ok = len(parts) == 3 and all(_ENHANCED_PART.fullmatch(p) for p in parts)
        ok = ok and parts[0] in ("*", "x", "2", "4", "5")
        regex = r"\.".join("[0-9]{1,3}" if p == "*" else p.replace("x", "[0-9]") for p in parts)
        example = "'5.1.1', '5.7.*', '*.2.2' or 'none'"
    else:
        ok = _REPLY.fullmatch(pattern) is not None
        regex = pattern.replace("x", "[0-9]")
        example = "'421', '4xx', '45x' or 'none'"
    if not ok:
        raise PolicyError(source, path, f"{pattern!r} is not a pattern such as {example}")
    return CodePattern(pattern, re.compile(regex))


def _when(value: object, source: str, path: str) -> When:
    raw = f.table(value, source, path)
    f.check_keys(raw, _WHEN_KEYS, source, path)
    fields: dict[str, Any] = {}
    if "stage" in raw:
        names = f.strings(raw["stage"], source, f"{path}.stage")
        for n in names:
            if n != "none" and n not in STAGES:
                raise PolicyError(
                    source,
                    f"{path}.stage",
                    f"unknown stage {n!r}; expected 'none' or one of {', '.join(STAGES)}",
                )
        fields["stages"] = frozenset(None if n == "none" else cast(Stage, n) for n in names)
    if "kind" in raw:
        kinds = f.strings(raw["kind"], source, f"{path}.kind")
        for k in kinds:
            if k not in ("transient", "permanent"):
                raise PolicyError(
                    source, f"{path}.kind", f"unknown kind {k!r}; expected transient or permanent"
                )
        fields["kinds"] = frozenset(cast(Kind, k) for k in kinds)
    if "reason" in raw:
        reasons = f.strings(raw["reason"], source, f"{path}.reason")
        for r in reasons:
            if r not in REASONS:
                raise PolicyError(
                    source,
                    f"{path}.reason",
                    f"unknown reason {r!r}; expected one of {', '.join(REASONS)}",
                )
        fields["reasons"] = frozenset(cast(Reason, r) for r in reasons)
    for key, enhanced in (("reply", False), ("enhanced", True)):
        if key in raw:
            where = f"{path}.{key}"
            fields["replies" if key == "reply" else key] = tuple(
                _code_matcher(p, enhanced=enhanced, source=source, path=where)
                for p in f.strings(raw[key], source, where)
            )
    if "text" in raw:
        pattern = f.text(raw["text"], source, f"{path}.text")
        try:
            fields["text"] = re.compile(pattern, re.IGNORECASE)
        except (re.error, RecursionError, OverflowError) as exc:
            raise PolicyError(
                source, f"{path}.text", f"invalid regular expression {pattern!r}: {exc}"
            ) from None
        risk = backtracking_risk(pattern)
        if risk is not None:
            raise PolicyError(
                source,
                f"{path}.text",
                f"{pattern!r} has {risk}, which can take exponential time on a reply a "
                "server writes (ReDoS); use one repeat (.*, [a-z ]+) or a possessive "
                "one (x++)",
            )
    return When(**fields)


#: Characters two repeated parts are tried on to tell whether they overlap: ASCII, and a
#: letter of the common scripts beyond it (Latin, Greek, Cyrillic, Hebrew, Arabic, CJK).
_SAMPLE: Final = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    " \t\n!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u00a0\u00e9\u00df\u4e2d\u017f"
    "\u03b1\u03c9\u0430\u044f\u05d0\u0627\u064a\u3042\uac00"
)
#: A bounded repeat with more than this many is as costly as an unbounded one for the
#: sequence check (three of {0,64} in a row took seconds: thirteenth review).
_LARGE_REPEAT: Final = 8
#: How many ways a chain of small repeats may split a text before it is refused, and
#: what one large repeat counts for.
_MAX_WAYS: Final = 100_000
_TEXT_WAYS: Final = 2048
#: The longest `text` pattern screened (and accepted): the screen's cost grows with it.
_MAX_PATTERN: Final = 300


def backtracking_risk(pattern: str) -> str | None:
    """What makes ``pattern`` liable to catastrophic backtracking, or None: a repeat or
    alternatives inside a repeat of more than once (``(a+)+``, ``(a+){1,30}``,
    ``(\\w+\\s?)*``, ``(a|aa)+``), or a backreference. A reply is the server's text:
    "450 " and 28 "a" made ``(a+)+$`` take 18 s in the worker (fuzz review), and
    Python's re has no timeout.

    Allowed inside a repeat, as they cannot split the text two ways: a fixed count of
    one character (``(\\d{3})+``); a repeat of one character followed by a literal it
    cannot match (``(\\w+\\.)+``), or, last in the repeated part, one the part starts
    with (``( [a-z]+)*``); alternatives that start with different literal characters
    (``(?:blocked|listed)+``); possessive repeats and atomic groups (never backtracked
    into). The parse is the re module's own (``re._parser``); without it, nothing is
    refused."""
    try:
        c: Any = importlib.import_module("re._constants")
        _parser: Any = importlib.import_module("re._parser")
        _compiler: Any = importlib.import_module("re._compiler")
        parsed = _parser.parse(pattern, re.IGNORECASE)
    except Exception:  # another Python's layout: compiled above, not screened here
        return None
    if len(pattern) > _MAX_PATTERN:
        return f"more than {_MAX_PATTERN} characters"
    repeats = {c.MAX_REPEAT, c.MIN_REPEAT}
    safe = {getattr(c, "POSSESSIVE_REPEAT", None), getattr(c, "ATOMIC_GROUP", None)} - {None}
    single = {c.LITERAL, c.NOT_LITERAL, c.IN, c.ANY, c.CATEGORY}

    compiled: dict[str, Any] = {}  # by content: a short-lived item's id() is reused

    def matches(item: Any, ch: str) -> bool:
        """Whether the one-character item matches ``ch`` (ignoring case, as re does)."""
        key = repr(item)
        one = compiled.get(key)
        if one is None:
            try:
                one = _compiler.compile(_parser.SubPattern(parsed.state, [item]), re.IGNORECASE)
            except Exception:  # cannot tell: as if it did
                return True
            compiled[key] = one
        return one.fullmatch(ch) is not None

    # What two parts are tried on to tell whether they overlap: the common scripts, and
    # every character the pattern names, as parsed (a literal, both ends of a range:
    # two ranges that overlap share an end), so "\\u0e01*\\u0e01*x" is seen as well as
    # "ก*ก*x" (fifteenth review).
    named: set[str] = set()

    def collect(items: Any) -> None:
        for op, av in items:
            if op == c.LITERAL:
                named.add(chr(av))
            elif op == c.RANGE:
                named.update((chr(av[0]), chr(av[1])))
            elif op == c.IN:
                collect(av)
                continue
            for child in av if isinstance(av, tuple | list) else [av]:
                if isinstance(child, _parser.SubPattern):
                    collect(child)
                elif isinstance(child, list):
                    collect(child if all(isinstance(x, tuple) for x in child) else [])

    collect(parsed)
    sample = _SAMPLE + "".join(sorted(named - set(_SAMPLE)))
    matched: dict[str, frozenset[str]] = {}  # what of the sample an item matches

    def matched_by(item: Any) -> frozenset[str]:
        key = repr(item)
        found = matched.get(key)
        if found is None:
            found = matched[key] = frozenset(ch for ch in sample if matches(item, ch))
        return found

    def overlap(first: Any, second: Any) -> bool:
        """Whether two repeated parts can match a common character (of the sample); a
        part of more than one item can."""
        if len(first) != 1 or len(second) != 1:
            return True
        if first[0][0] not in single or second[0][0] not in single:
            return True
        return not matched_by(first[0]).isdisjoint(matched_by(second[0]))

    def delimited(body: Any, after: Any) -> bool:
        """A repeat of ``body`` (one character) that ``after`` (a literal) ends."""
        return (
            len(body) == 1
            and body[0][0] in single
            and after is not None
            and after[0] == c.LITERAL
            and not matches(body[0], chr(after[1]))
        )

    def first_item(items: Any) -> Any:
        while items and items[0][0] == c.SUBPATTERN:
            items = items[0][1][3]
        return items[0] if items else None

    def distinct_starts(alternatives: Any) -> bool:
        """Alternatives that start with literals no two of which match each other under
        case folding (not only lower(): to re the long s is "s", the final sigma a
        sigma)."""
        starts = [first_item(alt) for alt in alternatives]
        if not all(s is not None and s[0] == c.LITERAL for s in starts):
            return False
        return not any(matches(a, chr(b[1])) for i, a in enumerate(starts) for b in starts[i + 1 :])

    def one_char(body: Any) -> bool:
        return len(body) == 1 and body[0][0] in single

    def walk(items: Any, inside: bool, wrap: Any) -> str | None:
        """``inside``: within a repeat of more than once, whose repeated part starts
        with ``wrap`` (what follows the last item of an iteration)."""
        for i, (op, av) in enumerate(items):
            if op in (c.GROUPREF, c.GROUPREF_EXISTS):
                return "a backreference"
            found = None
            if op in repeats:
                low, high, body = av
                if inside:
                    after = items[i + 1] if i + 1 < len(items) else wrap
                    fixed = low == high and one_char(body)
                    if not (fixed or delimited(body, after)):
                        return "a repeat inside a repeat"
                    continue
                found = walk(body, high > 1, first_item(body))
            elif op == c.BRANCH and inside:
                if not distinct_starts(av[1]):
                    return "alternatives inside a repeat"
                for alternative in av[1]:
                    found = found or walk(alternative, inside, wrap)
            else:
                last = i + 1 == len(items)
                for child in av if isinstance(av, tuple | list) else [av]:
                    for sub in child if isinstance(child, list) else [child]:
                        if isinstance(sub, _parser.SubPattern):
                            within = inside and op not in safe
                            follow = wrap if last else items[i + 1]
                            found = found or walk(sub, within, follow)
            if found:
                return found
        return None

    possessive = getattr(c, "POSSESSIVE_REPEAT", None)

    small_spans: dict[int, int] = {}  # id of a small repeat's body -> its span

    def sequence(items: Any, unclosed: list[Any], top: bool) -> tuple[str | None, list[Any]]:
        """Large repeats that can take the same text one after the other, with nothing
        between that ends the first ("a.*b.*c", "\\d+\\s*\\d+ x", "(.*)@(.*)x"):
        polynomial, seconds on a few kilobytes (eleventh and twelfth reviews). Groups
        are followed into, alternatives each; ``unclosed`` are the repeats nothing has
        ended yet; ``top``: the pattern itself, whose very last repeat always matches
        what is left ("spam.*")."""
        for i, (op, av) in enumerate(items):
            if op == c.LITERAL or op in single:  # a character ends what cannot take it
                unclosed = [u for u in unclosed if overlap(u, [(op, av)])]
            elif op == c.SUBPATTERN:
                risk, unclosed = sequence(av[3], unclosed, top and i + 1 == len(items))
                if risk:
                    return risk, unclosed
            elif op == c.BRANCH:
                left: list[Any] = []
                for alternative in av[1]:
                    risk, after = sequence(alternative, list(unclosed), False)
                    if risk:
                        return risk, after
                    left.extend(u for u in after if all(u is not x for x in left))
                unclosed = left
            elif op in repeats or op == possessive:
                low, high, body = av
                big = high == c.MAXREPEAT or high > _LARGE_REPEAT
                if not big and one_char(body) and high > low and op != possessive:
                    # Small repeats of one character in a row ("\\w?" twenty times,
                    # "\\d{0,8}" twelve): each multiplies the ways to split the text by
                    # its span (fourteenth review: past 10 s on 2 KB).
                    chain = [u for u in unclosed if overlap(u, body)]
                    ways = high - low + 1
                    for u in chain:
                        ways *= small_spans.get(id(u), _TEXT_WAYS)
                    if ways > _MAX_WAYS and not (top and i + 1 == len(items)):
                        return "repeats in a row that can split the text too many ways", unclosed
                    small_spans[id(body)] = high - low + 1
                    unclosed = [*chain, body] if low >= 1 else [*unclosed, body]
                    continue
                if not big:  # "(?:.*)?", "(.*){1}": what it repeats counts in the sequence
                    risk, inner = sequence(body, list(unclosed), False)
                    if risk:
                        return risk, inner
                    if low == 0:  # may be skipped: what was open before stays open
                        unclosed = [
                            *unclosed,
                            *(u for u in inner if all(u is not x for x in unclosed)),
                        ]
                    else:
                        unclosed = inner
                    continue
                last = top and i + 1 == len(items)
                if (
                    big
                    and not last
                    and op != possessive
                    and any(overlap(u, body) for u in unclosed if id(u) not in small_spans)
                ):
                    return "two large repeats that can match the same text", unclosed
                if big and not last and op != possessive:
                    ways = _TEXT_WAYS
                    for u in unclosed:
                        if id(u) in small_spans and overlap(u, body):
                            ways *= small_spans[id(u)]
                    if ways > _MAX_WAYS * _TEXT_WAYS:
                        return "repeats in a row that can split the text too many ways", unclosed
                if low >= 1:  # at least one character the earlier ones cannot take
                    unclosed = [u for u in unclosed if overlap(u, body)]
                if big and op != possessive:
                    unclosed = [*unclosed, body]
            elif op != c.AT:  # an assertion, an atomic group: from what is open now
                for child in av if isinstance(av, tuple | list) else [av]:
                    if isinstance(child, _parser.SubPattern):
                        risk, _ = sequence(child, list(unclosed), False)
                        if risk:
                            return risk, unclosed
        return None, unclosed

    return walk(parsed, False, None) or sequence(parsed, [], True)[0]


def parse_rules(value: object, source: str, path: str) -> list[PolicyRule]:
    if not isinstance(value, list):
        raise PolicyError(source, path, "expected an array of tables ([[rules]])")
    out: list[PolicyRule] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        raw = f.table(item, source, where)
        f.check_keys(raw, _RULE_KEYS, source, where)
        for key in ("name", "when", "action"):
            if key not in raw:
                raise PolicyError(source, f"{where}.{key}", "required")
        name = f.rule_name(raw["name"], source, f"{where}.name")
        if name in seen:
            raise PolicyError(source, f"{where}.name", f"duplicate rule name {name!r}")
        seen.add(name)
        action = raw["action"]
        if action not in ACTIONS:
            raise PolicyError(
                source,
                f"{where}.action",
                f"unknown action {f.describe(action)}; expected one of {', '.join(ACTIONS)}",
            )
        for key in ("schedule", "min_delay", "give_up_after"):
            if key in raw and action not in TIMED_ACTIONS:
                raise PolicyError(
                    source, f"{where}.{key}", "only a retry, defer or throttle rule takes this key"
                )
        if "pause" in raw and action not in ("throttle", "retry"):
            # throttle: pause the relay at once; retry: once the inline retries are used up
            raise PolicyError(source, f"{where}.pause", "only a throttle or retry rule takes pause")
        if action == "throttle" and "pause" not in raw:
            raise PolicyError(source, f"{where}.pause", "required for action 'throttle'")
        out.append(
            PolicyRule(
                name=name,
                when=_when(raw["when"], source, f"{where}.when"),
                action=action,
                schedule=f.name(raw["schedule"], source, f"{where}.schedule")
                if "schedule" in raw
                else None,
                min_delay=f.duration(raw["min_delay"], source, f"{where}.min_delay")
                if "min_delay" in raw
                else 0.0,
                give_up_after=f.duration(raw["give_up_after"], source, f"{where}.give_up_after")
                if "give_up_after" in raw
                else None,
                pause=f.duration(raw["pause"], source, f"{where}.pause")
                if "pause" in raw
                else None,
                source=source,
                path=where,
            )
        )
    return out


def parse_destinations(value: object, source: str, path: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise PolicyError(source, path, "expected an array of tables ([[destinations]])")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        raw = f.table(item, source, where)
        f.check_keys(raw, _DESTINATION_KEYS, source, where)
        for key in ("name", "domains"):
            if key not in raw:
                raise PolicyError(source, f"{where}.{key}", "required")
        parsed: dict[str, Any] = {
            "name": f.name(raw["name"], source, f"{where}.name"),
            "domains": tuple(
                f.domain_pattern(d, source, f"{where}.domains[{j}]")
                for j, d in enumerate(f.strings(raw["domains"], source, f"{where}.domains"))
            ),
            "rules": parse_rules(raw.get("rules", []), source, f"{where}.rules"),
        }
        for key in ("inline", "queue", "suppression"):
            parsed[key] = f.section(raw.get(key, {}), f.SECTIONS[key], source, f"{where}.{key}")
        if any(d["name"] == parsed["name"] for d in out):
            raise PolicyError(source, f"{where}.name", f"duplicate destination {parsed['name']!r}")
        out.append(parsed)
    return out
