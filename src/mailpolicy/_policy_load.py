"""Load policies from TOML: parse strictly, resolve ``extends``, validate, freeze.

Each file is parsed on its own into a *layer* of typed values (errors name that file);
layers are merged parent first (DESIGN.md §3, research A.9): the tables ``address``,
``inline``, ``queue``, ``budget``, ``circuit``, ``suppression`` and each
``schedules.NAME`` merge key by key, every value inside them (``backoff``, ``stages``)
replacing the parent's whole; the child's ``rules`` and ``destinations`` come *before*
the parent's, and one with the same ``name`` as a parent's replaces it. The merged layer
is then checked as a whole (schedules exist, the rules end with a catch-all, ...), with
errors naming the file being loaded.
"""

from __future__ import annotations

import functools
import os
import stat
import threading
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, cast

from . import _policy_fields as f
from ._errors import InvalidInputError, PolicyError
from ._policy import (
    AddressSettings,
    BudgetSettings,
    CircuitSettings,
    Destination,
    InlineSettings,
    Policy,
    PolicyRule,
    QueueSettings,
    SuppressionSettings,
)
from ._policy_rules import parse_destinations, parse_rules
from ._rules import check_own_rules, ruleset_with
from ._schedule import Schedule, format_duration

#: The only schema version this library reads.
SCHEMA: Final = 1
#: How many ``extends`` a chain may have (child -> parent -> grandparent -> ...).
MAX_EXTENDS: Final = 3

_TOP: Final = (
    "schema",
    "name",
    "description",
    "extends",
    *f.SECTIONS,
    "schedules",
    "rules",
    "destinations",
    "classification",
)
# --- one file ---------------------------------------------------------------------------


def _layer(raw: Mapping[str, Any], source: str, stem: str) -> dict[str, Any]:
    """Parse one file's top level into typed values (nothing inherited yet)."""
    f.check_keys(raw, _TOP, source, "")
    if "schema" not in raw:
        raise PolicyError(source, "schema", f"required: schema = {SCHEMA}")
    if raw["schema"] != SCHEMA or isinstance(raw["schema"], bool):
        raise PolicyError(
            source, "schema", f"unsupported schema {f.describe(raw['schema'])}; expected {SCHEMA}"
        )
    if "name" not in raw:
        raise PolicyError(source, "name", f"required: name = {stem!r} (the file's stem)")
    name = f.name(raw["name"], source, "name")
    if name != stem:
        raise PolicyError(source, "name", f"{name!r} must equal the file's stem {stem!r}")
    layer: dict[str, Any] = {
        "name": name,
        "description": f.text(raw.get("description", ""), source, "description"),
        "extends": f.text(raw["extends"], source, "extends") if "extends" in raw else None,
    }
    for key, spec in f.SECTIONS.items():
        layer[key] = f.section(raw.get(key, {}), spec, source, key)
    schedules = f.table(raw.get("schedules", {}), source, "schedules")
    layer["schedules"] = {
        f.name(n, source, f"schedules.{n}"): f.section(t, f.SCHEDULE, source, f"schedules.{n}")
        for n, t in schedules.items()
    }
    layer["rules"] = parse_rules(raw.get("rules", []), source, "rules")
    layer["destinations"] = parse_destinations(raw.get("destinations", []), source, "destinations")
    # Checked here, so errors name this file.
    layer["classification"] = check_own_rules(
        raw.get("classification", []), source, "classification"
    )
    return layer


def _merge(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(child)
    for key in f.SECTIONS:
        merged[key] = {**parent[key], **child[key]}
    merged["schedules"] = dict(parent["schedules"])
    for name, sched in child["schedules"].items():
        inherited = dict(parent["schedules"].get(name, {}))
        if sched.get("jitter", "proportional") != "proportional":
            # A ratio belongs to proportional jitter: a child choosing another mode drops
            # the parent's ratio with it (else it fails on a key the child never wrote).
            inherited.pop("jitter_ratio", None)
        merged["schedules"][name] = {**inherited, **sched}
    for key in ("rules", "destinations"):
        own = child[key]
        names = {_name_of(item) for item in own}
        merged[key] = [*own, *(item for item in parent[key] if _name_of(item) not in names)]
    # Classification rules: the child's first; one with a parent's id replaces it.
    ids = {item.get("id") for item in child["classification"]}
    merged["classification"] = [
        *child["classification"],
        *(item for item in parent["classification"] if item.get("id") not in ids),
    ]
    # A child's catch-all (replacing the parent's, or a new one) is the merged policy's
    # fallback: it goes last, after every parent rule, and no other catch-all stays before
    # it. At the child's position it would answer every failure before the parent's rules.
    rules = merged["rules"]
    own_catch_alls = [r for r in child["rules"] if r.when.is_catch_all]
    if own_catch_alls:
        fallback = own_catch_alls[-1]
        merged["rules"] = [r for r in rules if not r.when.is_catch_all] + [fallback]
    return merged


def _name_of(item: PolicyRule | Mapping[str, Any]) -> str:
    return item.name if isinstance(item, PolicyRule) else cast(str, item["name"])


# --- the merged whole -------------------------------------------------------------------


def _inline(raw: Mapping[str, Any], source: str, path: str) -> InlineSettings:
    inline = InlineSettings(**raw)
    if inline.attempt_timeout > inline.deadline:
        raise PolicyError(
            source,
            f"{path}.attempt_timeout",
            f"{format_duration(inline.attempt_timeout)} is longer than {path}.deadline "
            f"({format_duration(inline.deadline)})",
        )
    return inline


def _queue(
    raw: Mapping[str, Any], schedules: Mapping[str, Schedule], source: str, path: str
) -> QueueSettings:
    if "schedule" not in raw:
        raise PolicyError(source, f"{path}.schedule", "required: the name of a [schedules.NAME]")
    _known_schedule(raw["schedule"], schedules, source, f"{path}.schedule")
    return QueueSettings(**raw)


def _known_schedule(name: str, schedules: Mapping[str, Schedule], source: str, path: str) -> None:
    if name not in schedules:
        defined = ", ".join(sorted(schedules)) or "none"
        raise PolicyError(source, path, f"unknown schedule {name!r}; defined: {defined}")


def _checked_rules(
    rules: list[PolicyRule], schedules: Mapping[str, Schedule]
) -> tuple[PolicyRule, ...]:
    for rule in rules:
        if rule.schedule is not None:
            _known_schedule(rule.schedule, schedules, rule.source, f"{rule.path}.schedule")
    return tuple(rules)


def _assemble(layer: Mapping[str, Any], source: str) -> Policy:
    schedules: dict[str, Schedule] = {}
    for name, raw in layer["schedules"].items():
        path = f"schedules.{name}"
        if "stages" not in raw:
            raise PolicyError(source, f"{path}.stages", "required")
        jitter, ratio = f.schedule_jitter(raw, source, path)
        schedules[name] = Schedule(
            name=name, steps=raw["stages"], jitter=jitter, jitter_ratio=ratio
        )
    inline = _inline(layer["inline"], source, "inline")
    queue = _queue(layer["queue"], schedules, source, "queue")
    rules = _checked_rules(layer["rules"], schedules)
    if not rules:
        raise PolicyError(source, "rules", "a policy needs rules, the last a catch-all (when = {})")
    last = rules[-1]
    if not last.when.is_catch_all:
        raise PolicyError(
            source, "rules", f"the last rule must be a catch-all (when = {{}}), not {last.name!r}"
        )
    if last.action == "suppress":
        # A suppress rule only fires on recipient evidence, so it cannot be the fallback.
        raise PolicyError(
            last.source, f"{last.path}.action", "the catch-all rule cannot be 'suppress'"
        )
    suppression = SuppressionSettings(**layer["suppression"])
    destinations = []
    for i, raw in enumerate(layer["destinations"]):
        path = f"destinations[{i}]"
        destinations.append(
            Destination(
                name=raw["name"],
                domains=raw["domains"],
                inline=_inline({**layer["inline"], **raw["inline"]}, source, f"{path}.inline"),
                queue=_queue(
                    {**layer["queue"], **raw["queue"]}, schedules, source, f"{path}.queue"
                ),
                suppression=SuppressionSettings(**{**layer["suppression"], **raw["suppression"]}),
                rules=_checked_rules(raw["rules"], schedules) + rules,
            )
        )
    return Policy(
        name=layer["name"],
        description=layer["description"].strip(),
        source=source,
        extends=layer["extends"],
        inline=inline,
        queue=queue,
        schedules=MappingProxyType(schedules),
        rules=rules,
        budget=BudgetSettings(**layer["budget"]),
        circuit=CircuitSettings(**layer["circuit"]),
        address=AddressSettings(**layer["address"]),
        suppression=suppression,
        destinations=tuple(destinations),
        classifier=ruleset_with(layer["classification"]) if layer["classification"] else None,
    )


# --- files, names and extends -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _File:
    resource: Traversable
    shown: str  # how errors name it
    stem: str
    key: str  # identity for cycle detection
    directory: Path | None  # where relative `extends` paths start; None when shipped


def shipped_policies_dir() -> Traversable:
    """The shipped ``policies/`` folder: inside the installed package (the wheel carries
    it as ``mailpolicy/policies``), else the repository's top-level folder (editable
    installs and source checkouts)."""
    packaged = resources.files("mailpolicy") / "policies"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "policies"


def shipped_policy_names() -> tuple[str, ...]:
    """The names ``load_policy`` accepts without a path, sorted."""
    return tuple(
        sorted(
            entry.name.removesuffix(".toml")
            for entry in shipped_policies_dir().iterdir()
            if entry.name.endswith(".toml")
        )
    )


def _shipped(name: str, shown_by: str) -> _File:
    resource = shipped_policies_dir() / f"{name}.toml"
    if not f.NAME.fullmatch(name) or not resource.is_file():
        raise PolicyError(
            shown_by,
            "extends" if shown_by != "<load_policy>" else "",
            f"no shipped policy named {name!r}; shipped: {', '.join(shipped_policy_names())}",
        )
    return _File(resource, f"{name}.toml", name, f"shipped:{name}", None)


def _path_file(path: Path, shown: str) -> _File:
    return _File(path, shown, path.stem, str(path.resolve()), path.parent)


#: What identifies one version of a policy file: its path as referenced (absolute, not
#: resolved), the file that path leads to now (symlinks resolved), and the inode, size,
#: modification and change times ``os.stat`` gave just before it was read.
_Stamp = tuple[str, str, int, int, int, int]


def _as_referenced(path: str) -> str:
    """``path`` made absolute without normalising it: "link/../base.toml" must stay so,
    as the file opened goes through the link first (os.path.abspath would drop it:
    eleventh review)."""
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


def _stamp(referenced: str) -> _Stamp | None:
    try:
        real = os.path.realpath(referenced)
        st = os.stat(real)
    except (OSError, ValueError):
        return None
    return (referenced, real, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


#: The largest policy file read (the shipped ones are a few kilobytes).
MAX_POLICY_BYTES: Final = 1024 * 1024


def _read(file: _File, stamps: list[_Stamp | None] | None = None) -> dict[str, Any]:
    if stamps is not None and file.directory is not None:
        # Taken before reading: a file changed while it is read shows as changed later.
        stamps.append(_stamp(_as_referenced(str(file.resource))))
    try:
        shipped = file.directory is None
        data = file.resource.read_bytes() if shipped else _read_regular_file(file)
    except OSError as exc:
        raise PolicyError(file.shown, "", f"cannot read the file: {exc.strerror or exc}") from exc
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PolicyError(file.shown, "", f"not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(file.shown, "", f"invalid TOML: {exc}") from exc
    except RecursionError:  # tomllib recurses per level of nested arrays and tables
        raise PolicyError(file.shown, "", "invalid TOML: nested too deeply") from None


def _read_regular_file(file: _File) -> bytes:
    """A policy file's bytes: a regular file of at most :data:`MAX_POLICY_BYTES` (a FIFO
    or a device would block or never end: fuzz review). Opened without blocking, then
    checked on the descriptor, so what is read is what was checked."""
    fd = os.open(file.key, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PolicyError(file.shown, "", "not a regular file")
        data = fh.read(MAX_POLICY_BYTES + 1)
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(file.shown, "", f"larger than {MAX_POLICY_BYTES // 1024} KiB")
    return data


def _is_path(reference: str) -> bool:
    return "/" in reference or os.sep in reference or reference.endswith(".toml")


def _layers(
    file: _File, chain: tuple[_File, ...], stamps: list[_Stamp | None] | None = None
) -> dict[str, Any]:
    """The merged layer of ``file`` and its ancestors; each policy file (not a shipped
    one) read is stamped into ``stamps`` when given."""
    layer = _layer(_read(file, stamps), file.shown, file.stem)
    parent_ref = layer["extends"]
    if parent_ref is None:
        return layer
    if _is_path(parent_ref):
        if file.directory is None:
            raise PolicyError(file.shown, "extends", "a shipped policy extends shipped ones only")
        parent_path = file.directory / parent_ref
        shown_dir = os.path.dirname(file.shown)
        parent = _path_file(parent_path, os.path.join(shown_dir, parent_ref))
        if not parent_path.is_file():
            raise PolicyError(file.shown, "extends", f"parent policy not found: {parent.shown}")
    else:
        parent = _shipped(parent_ref, file.shown)
    seen = (*chain, file)
    if any(parent.key == earlier.key for earlier in seen):
        cycle = " -> ".join(x.shown for x in (*seen, parent))
        raise PolicyError(file.shown, "extends", f"cycle: {cycle}")
    if len(seen) > MAX_EXTENDS:
        raise PolicyError(file.shown, "extends", f"chains of more than {MAX_EXTENDS} extends")
    return _merge(_layers(parent, seen, stamps), layer)


@functools.lru_cache(maxsize=16)
def _load_shipped(name: str) -> Policy:
    file = _shipped(name, "<load_policy>")
    return _assemble(_layers(file, ()), file.shown)


def load_policy(name_or_path: str | os.PathLike[str]) -> Policy:
    """Load a shipped policy by name (``"default"``, ``"transactional"``, ``"bulk"``) or a
    policy file by path (a ``str`` containing ``/`` or ending in ``.toml``, or a
    ``PathLike``). Raises :class:`PolicyError` naming the file, the dotted key path and
    what was expected."""
    if isinstance(name_or_path, os.PathLike):
        path = Path(name_or_path)
        return _load_path(path, str(name_or_path))
    if not isinstance(name_or_path, str):
        raise InvalidInputError(
            f"load_policy takes a policy name or a path, not {type(name_or_path).__name__}"
        )
    if _is_path(name_or_path):
        return _load_path(Path(name_or_path), name_or_path)
    return _load_shipped(name_or_path)


#: Policies loaded from files, by (resolved path, name shown in errors): the stamps of
#: every file of the ``extends`` chain, and the policy. Django builds a backend, and so
#: loads its policy file, for every ``send_mail``; parsing and validating costs about a
#: millisecond, checking the stamps a few microseconds. A file edited since (another
#: inode, size or time) is read again. Policies are immutable, so one is shared freely.
_PATH_CACHE: Final[dict[tuple[str, str], tuple[tuple[_Stamp | None, ...], Policy]]] = {}
_PATH_CACHE_SIZE: Final = 64
_PATH_CACHE_LOCK: Final = threading.Lock()


def _load_path(path: Path, shown: str) -> Policy:
    try:
        return _load_path_file(path, shown)
    except PolicyError:
        raise
    except (OSError, ValueError) as exc:  # a NUL in a path, a name too long, ...
        raise PolicyError(shown, "", f"cannot read the file: {exc}") from exc


def _load_path_file(path: Path, shown: str) -> Policy:
    file = _path_file(path, shown)
    # Keyed by the path as given, made absolute (not resolved): the same name from
    # another directory, or through a symlink retargeted since, is another file.
    cache_key = (_as_referenced(str(path)), file.shown)
    cached = _PATH_CACHE.get(cache_key)
    if cached is not None:
        stamps, policy = cached
        if None not in stamps and all(_stamp(s[0]) == s for s in stamps if s is not None):
            return policy
    read: list[_Stamp | None] = []
    policy = _assemble(_layers(file, (), read), file.shown)
    with _PATH_CACHE_LOCK:
        if len(_PATH_CACHE) >= _PATH_CACHE_SIZE:
            _PATH_CACHE.pop(next(iter(_PATH_CACHE)))  # the oldest entry
        _PATH_CACHE[cache_key] = (tuple(read), policy)
    return policy


def check_policy_files(paths: Iterable[str | os.PathLike[str]]) -> list[PolicyError]:
    """Load each file (as a path, never as a shipped name); the errors, one per bad file."""
    errors = []
    for path in paths:
        try:
            _load_path(Path(path), str(path))
        except PolicyError as exc:
            errors.append(exc)
    return errors
