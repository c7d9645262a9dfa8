"""Strict parsers for the values of a policy file, one per kind of key.

Each takes the raw TOML value, the file (``source``) and the dotted key path, and either
returns the typed value or raises :class:`PolicyError` saying what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, cast

from ._address import ADDRESS_MODES
from ._errors import PolicyError
from ._schedule import JITTERS, Backoff, Jitter, ScheduleStep, format_duration, parse_duration

#: A field parser: ``(value, source, path) -> typed value``.
Field = Callable[[object, str, str], Any]

NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")
_RULE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]*")
#: Ten years: any longer duration is a typo (a unit slip), not a wish.
_LONGEST: Final = 3650 * 86400.0


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def describe(value: object) -> str:
    """A value as TOML would spell it, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def table(value: object, source: str, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(source, path, f"expected a table, got {describe(value)}")
    return cast(dict[str, Any], value)


def check_keys(raw: Mapping[str, Any], allowed: Sequence[str], source: str, path: str) -> None:
    for key in raw:
        if key not in allowed:
            raise PolicyError(
                source, join(path, key), f"unknown key; expected one of {', '.join(allowed)}"
            )


def section(value: object, spec: Mapping[str, Field], source: str, path: str) -> dict[str, Any]:
    """A table whose keys are all optional, each parsed by its field parser."""
    raw = table(value, source, path)
    check_keys(raw, list(spec), source, path)
    return {key: spec[key](raw[key], source, join(path, key)) for key in raw}


def integer(low: int, high: int) -> Field:
    def parse(value: object, source: str, path: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise PolicyError(source, path, f"expected an integer, got {describe(value)}")
        if not low <= value <= high:
            raise PolicyError(
                source, path, f"expected an integer from {low} to {high}, got {value}"
            )
        return value

    return parse


def number(low: float, high: float) -> Field:
    def parse(value: object, source: str, path: str) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise PolicyError(source, path, f"expected a number, got {describe(value)}")
        if not low <= value <= high:
            raise PolicyError(source, path, f"expected a number from {low} to {high}, got {value}")
        return float(value)

    return parse


def boolean(value: object, source: str, path: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(source, path, f"expected true or false, got {describe(value)}")
    return value


def text(value: object, source: str, path: str) -> str:
    if not isinstance(value, str):
        raise PolicyError(source, path, f"expected a string, got {describe(value)}")
    return value


def name(value: object, source: str, path: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise PolicyError(
            source,
            path,
            f"expected a name of lower-case letters, digits, '_' or '-', got {describe(value)}",
        )
    return value


def rule_name(value: object, source: str, path: str) -> str:
    if not isinstance(value, str) or not _RULE_NAME.fullmatch(value):
        raise PolicyError(
            source,
            path,
            f"expected a name of lower-case letters, digits, '.', '_' or '-', "
            f"got {describe(value)}",
        )
    return value


def choice(options: Sequence[str]) -> Field:
    def parse(value: object, source: str, path: str) -> str:
        if value not in options:
            raise PolicyError(
                source, path, f"expected one of {', '.join(options)}, got {describe(value)}"
            )
        return cast(str, value)

    return parse


def strings(value: object, source: str, path: str, *, empty: bool = False) -> list[str]:
    """A string or a list of strings (non-empty unless ``empty``)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and (value or empty) and all(isinstance(v, str) for v in value):
        return cast(list[str], value)
    raise PolicyError(source, path, "expected a string or a non-empty list of strings")


def duration(value: object, source: str, path: str) -> float:
    """A positive duration with a unit; bare numbers are refused (the Postfix unit trap)."""
    seconds = parse_duration(value) if isinstance(value, str) else None
    if seconds is None:
        raise PolicyError(
            source,
            path,
            f"expected a duration with a unit (ms, s, m, h or d) such as '500ms', '15m' "
            f"or '5d', got {describe(value)}",
        )
    if not 0 < seconds <= _LONGEST:
        raise PolicyError(
            source, path, f"expected a duration above 0 and at most 3650d, got {value}"
        )
    return seconds


def duration_or_never(value: object, source: str, path: str) -> float | None:
    return None if value == "never" else duration(value, source, path)


def domain_pattern(value: object, source: str, path: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(
        r"(?:\*\.)?[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*",
        value,
    ):
        raise PolicyError(
            source,
            path,
            f"expected a lower-case ASCII domain such as 'example.com' or '*.example.com', "
            f"got {describe(value)}",
        )
    return value


def _jitter_ratio(jitter: str, raw: Mapping[str, Any], source: str, path: str) -> float:
    if "jitter_ratio" not in raw:
        return 0.2 if jitter == "proportional" else 0.0
    if jitter != "proportional":
        raise PolicyError(source, join(path, "jitter_ratio"), "only with jitter = 'proportional'")
    return cast(float, number(0.0, 1.0)(raw["jitter_ratio"], source, join(path, "jitter_ratio")))


def _exponential(raw: Mapping[str, Any], source: str, path: str) -> tuple[float, float, float]:
    for key in ("initial", "multiplier", "max"):
        if key not in raw:
            raise PolicyError(source, join(path, key), "required")
    initial = duration(raw["initial"], source, join(path, "initial"))
    multiplier = cast(
        float, number(1.0, 100.0)(raw["multiplier"], source, join(path, "multiplier"))
    )
    cap = duration(raw["max"], source, join(path, "max"))
    if cap < initial:
        raise PolicyError(
            source, join(path, "max"), f"must be at least initial ({format_duration(initial)})"
        )
    return initial, multiplier, cap


def backoff(value: object, source: str, path: str) -> Backoff:
    """``{ initial, multiplier, max, jitter = "full", jitter_ratio }``."""
    raw = table(value, source, path)
    check_keys(raw, ["initial", "multiplier", "max", "jitter", "jitter_ratio"], source, path)
    initial, multiplier, cap = _exponential(raw, source, path)
    jitter = cast(Jitter, choice(JITTERS)(raw.get("jitter", "full"), source, join(path, "jitter")))
    ratio = _jitter_ratio(jitter, raw, source, path)
    return Backoff(
        initial=initial, multiplier=multiplier, max=cap, jitter=jitter, jitter_ratio=ratio
    )


def schedule_steps(value: object, source: str, path: str) -> tuple[ScheduleStep, ...]:
    """``[ {until?, every} | {until?, initial, multiplier, max}, ... ]``: ``until`` strictly
    increasing and absent on the last stage; no stage may start below the previous
    stage's longest delay (a schedule never speeds up)."""
    if not isinstance(value, list) or not value:
        raise PolicyError(source, path, "expected a non-empty array of stages")
    steps: list[ScheduleStep] = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        raw = table(item, source, where)
        check_keys(raw, ["until", "every", "initial", "multiplier", "max"], source, where)
        last = i == len(value) - 1
        until = None
        if "until" in raw:
            if last:
                raise PolicyError(
                    source, join(where, "until"), "the last stage runs until give-up: no until"
                )
            until = duration(raw["until"], source, join(where, "until"))
            if steps and steps[-1].until is not None and until <= steps[-1].until:
                raise PolicyError(
                    source,
                    join(where, "until"),
                    f"must be later than the previous stage's ({format_duration(steps[-1].until)})",
                )
        elif not last:
            raise PolicyError(source, join(where, "until"), "required on every stage but the last")
        exponential = any(k in raw for k in ("initial", "multiplier", "max"))
        if "every" in raw and exponential:
            raise PolicyError(
                source, where, "a stage takes either every or initial/multiplier/max, not both"
            )
        if "every" in raw:
            step = ScheduleStep(
                until=until, every=duration(raw["every"], source, join(where, "every"))
            )
        elif exponential:
            initial, multiplier, cap = _exponential(raw, source, where)
            step = ScheduleStep(until=until, initial=initial, multiplier=multiplier, max=cap)
        else:
            raise PolicyError(source, where, "expected every or initial/multiplier/max")
        if steps and step.shortest < steps[-1].longest:
            raise PolicyError(
                source,
                where,
                f"starts at {format_duration(step.shortest)}, below the previous stage's "
                f"{format_duration(steps[-1].longest)}: a schedule must not speed up",
            )
        steps.append(step)
    return tuple(steps)


def schedule_jitter(raw: Mapping[str, Any], source: str, path: str) -> tuple[Jitter, float]:
    """The (merged) ``jitter`` and ``jitter_ratio`` of a schedule table."""
    jitter = cast(Jitter, raw.get("jitter", "proportional"))
    return jitter, _jitter_ratio(jitter, raw, source, path)


#: The key-by-key tables of a policy (and of a destination's overrides).
SECTIONS: Final[dict[str, dict[str, Field]]] = {
    "inline": {
        "max_attempts": integer(1, 10),
        "deadline": duration,
        "attempt_timeout": duration,
        "backoff": backoff,
    },
    "queue": {
        "schedule": name,
        "give_up_after": duration,
        "hold_for": duration,
        "end_of_data_timeout": duration,
    },
    "budget": {
        "capacity": integer(1, 100_000),
        "retry_cost": integer(1, 100_000),
        "success_refund": integer(0, 100_000),
    },
    "circuit": {"open_after": integer(1, 1000), "probe_every": duration},
    "address": {
        "mode": choice(ADDRESS_MODES),
        "check_deliverability": boolean,
        "allow_domains": lambda v, s, p: tuple(
            domain_pattern(d, s, f"{p}[{i}]") for i, d in enumerate(strings(v, s, p, empty=True))
        ),
    },
    "suppression": {
        "enabled": boolean,
        "check_before_send": boolean,
        "ttl": duration_or_never,
        "soft_bounce_limit": integer(0, 1000),
        "soft_bounce_window": duration,
    },
}
#: The keys of a ``[schedules.NAME]`` table.
SCHEDULE: Final[dict[str, Field]] = {
    "jitter": choice(JITTERS),
    "jitter_ratio": number(0.0, 1.0),
    "stages": schedule_steps,
}
