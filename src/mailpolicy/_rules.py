"""Classification rules: data files compiled into fast lookup structures.

The rules live in ``data/classification.toml`` (shipped in the package); each has an id
that the verdict names. Three layers, most specific first (DESIGN.md §2 rule 2):

1. ``[[rules]]``: ordered text rules (provider-specific ones first, then generic phrase
   rules gated by stage, code and enhanced status). The first rule whose conditions all
   hold and one of whose phrases occurs decides.
2. ``[[status]]``: the enhanced status table, by subject.detail, then subject.
3. ``[[codes]]``: reply-code defaults, by exact code, then by class (``5xx``).

Phrases are matched on words, not regexes: the text is lower-cased and split into
``\\w+`` words; a phrase is a sequence of words that must occur in that order with
nothing between them, ``*`` standing for a gap of up to :data:`GAP` characters. A rule
is only examined when the first word of one of its phrases occurs in the text, found by
one set intersection, so the cost grows with the text, not with the number of rules.
"""

from __future__ import annotations

import json
import operator
import re
import threading
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, cast

from ._errors import PolicyError
from ._vocab import (
    DEAD_ADDRESS_REASONS,
    KINDS,
    REASONS,
    SCOPES,
    STAGES,
    Kind,
    Reason,
    Scope,
    Stage,
)

#: Characters a ``*`` in a phrase may stand for.
GAP: Final = 60

_WORD = re.compile(r"\w+")
# For ASCII text (nearly every reply) the same split is one C-level byte translation
# (every non-word byte to a space) and str.split: about 2.5x faster than the regex.
_NON_WORD_TO_SPACE: Final = bytes(
    c if chr(c).isascii() and (chr(c).isalnum() or c == ord("_")) else ord(" ") for c in range(256)
)

Matcher = Callable[[str], bool]


def words_of(lowered: str) -> list[str]:
    """The words (``\\w+`` runs) of a lower-cased text, as rules see them."""
    if lowered.isascii():
        return lowered.encode("ascii").translate(_NON_WORD_TO_SPACE).decode("ascii").split()
    return _WORD.findall(lowered)


@dataclass(frozen=True, slots=True)
class Phrase:
    """A sequence of words with optional ``*`` gaps, matched on the space-joined words.
    It is only looked for in texts where all its ``words`` occur."""

    source: str
    words: frozenset[str]
    segments: tuple[str, ...]  # each " w1 w2 " with surrounding spaces

    def found_in(self, joined: str) -> bool:
        segments = self.segments
        first = segments[0]
        if len(segments) == 1:  # the common case: one run of words, one C-level search
            return first in joined
        rest = segments[1:]
        pos = joined.find(first)
        while pos != -1:
            end = pos + len(first) - 1
            for seg in rest:
                nxt = joined.find(seg, end, end + GAP + len(seg))
                if nxt == -1:
                    break
                end = nxt + len(seg) - 1
            else:
                return True
            pos = joined.find(first, pos + 1)
        return False


def compile_phrase(source: str, where: str, path: str) -> Phrase:
    parts = [p.strip() for p in source.lower().split("*")]
    segments: list[str] = []
    all_words: list[str] = []
    for part in parts:
        words = words_of(part)
        if not words:
            raise PolicyError(where, path, f"phrase {source!r} has an empty part")
        segments.append(" " + " ".join(words) + " ")
        all_words.extend(words)
    return Phrase(source=source, words=frozenset(all_words), segments=tuple(segments))


def _pattern(source: str, where: str, path: str, *, parts: int) -> Matcher:
    """Compile a code (``5xx``, ``55x``, ``550``) or status (``5.7.*``, ``*.1.1``)
    pattern; the word ``none`` matches a missing value."""
    if source == "none":
        return lambda value: value == ""
    pieces = source.split(".") if parts == 3 else [source]
    ok = len(pieces) == parts and all(re.fullmatch(r"\*|[0-9x]{1,3}", p) for p in pieces)
    if parts == 1:
        ok = ok and re.fullmatch(r"[2-5][0-9x]{2}", source) is not None
    if not ok:
        kind = "reply code" if parts == 1 else "enhanced status"
        raise PolicyError(where, path, f"{source!r} is not a {kind} pattern")
    regex = r"\.".join(r"[0-9]+" if p == "*" else p.replace("x", "[0-9]") for p in pieces)
    return _fullmatch(re.compile(regex))


def _fullmatch(rx: re.Pattern[str]) -> Matcher:
    return lambda value: rx.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Rule:
    """One classification rule. Absent conditions always hold."""

    id: str
    reason: Reason
    phrases: tuple[Phrase, ...] = ()
    codes: tuple[Matcher, ...] = ()
    statuses: tuple[Matcher, ...] = ()
    stages: frozenset[Stage | None] | None = None
    hosts: tuple[str, ...] = ()
    kind: Kind | None = None
    scope: Scope | None = None
    weak: bool = False
    firm: bool = False

    def applies(self, code: str, status: str, stage: Stage | None, host: str) -> bool:
        if self.stages is not None and stage not in self.stages:
            return False
        if self.codes and not any(m(code) for m in self.codes):
            return False
        if self.statuses and not any(m(status) for m in self.statuses):
            return False
        return not self.hosts or any(host == h or host.endswith("." + h) for h in self.hosts)


_RULE_KEYS: Final = frozenset(
    {
        "id",
        "reason",
        "text",
        "text_from",
        "code",
        "status",
        "stage",
        "host",
        "kind",
        "scope",
        "match",
        "weak",
        "firm",
    }
)


def _strings(value: object, where: str, path: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return cast(list[str], value)
    raise PolicyError(where, path, "expected a string or a non-empty list of strings")


def compile_rule(raw: Mapping[str, Any], where: str, path: str, *, table: str) -> Rule:
    """Validate one raw rule (from TOML) and compile it."""
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise PolicyError(where, f"{path}.{unknown[0]}", "unknown key")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", rule_id):
        raise PolicyError(
            where, f"{path}.id", "expected an id of lower-case letters, digits, '.', '_' or '-'"
        )
    reason = raw.get("reason")
    if reason not in REASONS:
        raise PolicyError(
            where,
            f"{path}.reason",
            f"unknown reason {reason!r}; expected one of {', '.join(REASONS)}",
        )
    phrases = (
        tuple(
            compile_phrase(p, where, f"{path}.text")
            for p in _strings(raw["text"], where, f"{path}.text")
        )
        if "text" in raw
        else ()
    )
    if table == "rules" and not phrases:
        raise PolicyError(where, f"{path}.text", "a text rule needs at least one phrase")
    codes = (
        tuple(
            _pattern(p, where, f"{path}.code", parts=1)
            for p in _strings(raw["code"], where, f"{path}.code")
        )
        if "code" in raw
        else ()
    )
    statuses = (
        tuple(
            _pattern(p, where, f"{path}.status", parts=3)
            for p in _strings(raw["status"], where, f"{path}.status")
        )
        if "status" in raw
        else ()
    )
    stages: frozenset[Stage | None] | None = None
    if "stage" in raw:
        names = _strings(raw["stage"], where, f"{path}.stage")
        bad = [n for n in names if n != "none" and n not in STAGES]
        if bad:
            raise PolicyError(
                where,
                f"{path}.stage",
                f"unknown stage {bad[0]!r}; expected 'none' or one of {', '.join(STAGES)}",
            )
        stages = frozenset(None if n == "none" else cast(Stage, n) for n in names)
    hosts = (
        tuple(h.lower().strip(".") for h in _strings(raw["host"], where, f"{path}.host"))
        if "host" in raw
        else ()
    )
    kind = raw.get("kind")
    if kind is not None and kind not in KINDS:
        raise PolicyError(where, f"{path}.kind", f"expected one of {', '.join(KINDS)}")
    scope = raw.get("scope")
    if scope is not None and scope not in SCOPES:
        raise PolicyError(where, f"{path}.scope", f"expected one of {', '.join(SCOPES)}")
    flags = {}
    for flag, allowed_in in (("weak", "rules"), ("firm", "status")):
        if flag in raw:
            if table != allowed_in:
                raise PolicyError(
                    where, f"{path}.{flag}", f"only [[{allowed_in}]] entries take {flag!r}"
                )
            if not isinstance(raw[flag], bool):
                raise PolicyError(where, f"{path}.{flag}", "expected true or false")
            flags[flag] = raw[flag]
    return Rule(
        id=rule_id,
        reason=cast(Reason, reason),
        phrases=phrases,
        codes=codes,
        statuses=statuses,
        stages=stages,
        hosts=hosts,
        kind=cast(Kind | None, kind),
        scope=cast(Scope | None, scope),
        **flags,
    )


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Compiled rules: ordered text rules whose phrases are indexed by trigger word, and
    the status and code tables keyed for dictionary lookup."""

    text_rules: tuple[Rule, ...]
    triggers: Mapping[str, tuple[tuple[int, Phrase], ...]]
    trigger_words: frozenset[str]
    status_table: Mapping[str, tuple[Rule, ...]]  # "1.1", "1.*"
    code_table: Mapping[str, tuple[Rule, ...]]  # "552", "5xx"
    needs_host: bool  # some rule keys on the MX host

    def candidates(self, words: frozenset[str]) -> list[tuple[int, Phrase]]:
        """The phrases worth looking for in a text with these words (all their words
        occur), with the index of their rule, in rule order."""
        hits: list[tuple[int, Phrase]] = []
        triggers = self.triggers
        for w in self.trigger_words.intersection(words):
            # A plain loop: a generator per trigger word costs more than the appends.
            for pair in triggers[w]:
                if pair[1].words <= words:
                    hits.append(pair)  # noqa: PERF401
        if len(hits) > 1:
            hits.sort(key=_RULE_INDEX)
        return hits


_RULE_INDEX: Final = operator.itemgetter(0)


def build_ruleset(raw: Mapping[str, Any], where: str) -> RuleSet:
    """Compile the parsed TOML of a rule file."""
    unknown = sorted(set(raw) - {"rules", "status", "codes"})
    if unknown:
        raise PolicyError(where, unknown[0], "unknown key; expected rules, status or codes")
    seen: set[str] = set()

    def compiled(table: str) -> list[Rule]:
        items = raw.get(table, [])
        if not isinstance(items, list):
            raise PolicyError(where, table, "expected an array of tables")
        out = []
        texts: dict[object, object] = {}  # rule id -> its phrases, for text_from
        for i, given in enumerate(items):
            path = f"{table}[{i}]"
            if not isinstance(given, dict):
                raise PolicyError(where, path, "expected a table")
            item = given
            if "text_from" in given:
                # The same phrases under other conditions, without a second copy.
                if "text" in given:
                    raise PolicyError(where, f"{path}.text_from", "give text or text_from")
                source = given["text_from"]
                if source not in texts:
                    raise PolicyError(
                        where, f"{path}.text_from", f"no earlier rule {source!r} with a text"
                    )
                item = {k: v for k, v in given.items() if k != "text_from"}
                item["text"] = texts[source]
            if "text" in item:
                texts[item.get("id")] = item["text"]
            rule = compile_rule(item, where, path, table=table)
            if rule.id in seen:
                raise PolicyError(where, f"{path}.id", f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
            out.append(rule)
        return out

    text_rules = tuple(compiled("rules"))
    # Index each phrase under its word that the fewest phrases share (the longest among
    # equals): a text then wakes only the few phrases whose rarest word it contains.
    frequency = Counter(w for rule in text_rules for p in rule.phrases for w in p.words)
    triggers: dict[str, list[tuple[int, Phrase]]] = {}
    for i, rule in enumerate(text_rules):
        for phrase in rule.phrases:
            trigger = min(sorted(phrase.words), key=lambda w: (frequency[w], -len(w)))
            triggers.setdefault(trigger, []).append((i, phrase))

    def keyed(
        table: str, key_of: Callable[[Mapping[str, Any], str], str]
    ) -> dict[str, tuple[Rule, ...]]:
        out: dict[str, list[Rule]] = {}
        for i, (item, rule) in enumerate(zip(raw.get(table, []), compiled(table), strict=True)):
            out.setdefault(key_of(item, f"{table}[{i}].match"), []).append(rule)
        return {k: tuple(v) for k, v in out.items()}

    def status_key(item: Mapping[str, Any], path: str) -> str:
        match = item.get("match")
        if not isinstance(match, str) or not re.fullmatch(r"[0-9]{1,3}\.(?:[0-9]{1,3}|\*)", match):
            raise PolicyError(where, path, "expected 'subject.detail' or 'subject.*', e.g. '1.1'")
        return match

    def code_key(item: Mapping[str, Any], path: str) -> str:
        match = item.get("match")
        if not isinstance(match, str) or not re.fullmatch(r"[2-5](?:[0-9]{2}|xx)", match):
            raise PolicyError(where, path, "expected a reply code or a class such as '5xx'")
        return match

    return RuleSet(
        text_rules=text_rules,
        triggers={k: tuple(v) for k, v in triggers.items()},
        trigger_words=frozenset(triggers),
        status_table=keyed("status", status_key),
        code_table=keyed("codes", code_key),
        needs_host=any(r.hosts for r in text_rules),
    )


BUILTIN_RULES_FILE: Final = "classification.toml"
_BUILTIN: list[dict[str, Any]] = []  # the shipped file, parsed once (read-only)
#: Rule sets with a policy's own rules first, by those rules' content: a policy file is
#: loaded for every Django backend (every send_mail), the shipped rules only once.
_WITH_OWN: dict[str, RuleSet] = {}
_WITH_OWN_LOCK: Final = threading.Lock()


def _builtin_raw() -> dict[str, Any]:
    if not _BUILTIN:
        name = BUILTIN_RULES_FILE
        text = resources.files("mailpolicy").joinpath("data", name).read_text("utf-8")
        try:
            _BUILTIN.append(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(name, "", f"invalid TOML: {exc}") from exc
    return _BUILTIN[0]


def load_builtin_rules() -> RuleSet:
    """The rules shipped with the package."""
    return build_ruleset(_builtin_raw(), BUILTIN_RULES_FILE)


def check_own_rules(own: object, source: str, path: str) -> list[dict[str, Any]]:
    """Check a policy's ``[[classification]]`` entries, each as a ``[[rules]]`` entry of
    the shipped file (errors name ``source`` and ``path[i]``; an id may not repeat a
    shipped rule's), and return them ready for :func:`ruleset_with`. An entry whose
    reason is a dead address is ``weak`` unless it says ``weak = false``: it gets the
    guards the shipped generic phrases have (a firm or a security status outweighs it;
    quoted at an unknown stage it needs an addressing status to suppress)."""
    if not isinstance(own, list):
        raise PolicyError(source, path, "expected an array of tables")
    builtin = _builtin_raw()
    shipped = {r.get("id") for t in ("rules", "status", "codes") for r in builtin.get(t, [])}
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(own):
        where = f"{path}[{i}]"
        if not isinstance(raw, Mapping):
            raise PolicyError(source, where, "expected a table")
        for key in ("text_from", "match"):
            if key in raw:
                raise PolicyError(source, f"{where}.{key}", "not a key of a text rule")
        entry = dict(raw)
        if entry.get("reason") in DEAD_ADDRESS_REASONS and "weak" not in entry:
            entry["weak"] = True
        rule = compile_rule(entry, source, where, table="rules")
        if rule.id in shipped:
            raise PolicyError(
                source, f"{where}.id", f"{rule.id!r} is a shipped rule's id; choose another"
            )
        if rule.id in seen:
            raise PolicyError(source, f"{where}.id", f"duplicate rule id {rule.id!r}")
        seen.add(rule.id)
        out.append(entry)
    return out


def ruleset_with(own: Sequence[Mapping[str, Any]]) -> RuleSet:
    """The shipped rules with ``own`` (entries from :func:`check_own_rules`) tried before
    them; built once per distinct set of entries."""
    key = json.dumps(list(own), sort_keys=True, default=str)
    with _WITH_OWN_LOCK:
        found = _WITH_OWN.get(key)
    if found is None:
        builtin = _builtin_raw()
        found = build_ruleset({**builtin, "rules": [*own, *builtin.get("rules", [])]}, "policy")
        with _WITH_OWN_LOCK:
            _WITH_OWN.setdefault(key, found)
    return found


def first_rule(
    rules: Sequence[Rule], code: str, status: str, stage: Stage | None, host: str
) -> Rule | None:
    for rule in rules:
        if rule.applies(code, status, stage, host):
            return rule
    return None
