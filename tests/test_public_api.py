"""The public surface: what ``mailpolicy`` exports, and that it stays in sync."""

from __future__ import annotations

import importlib.metadata
import types

import mailpolicy


def test_all_is_sorted_and_complete() -> None:
    """``__all__`` has no duplicates (ruff's RUF022 keeps it sorted), every name in it
    exists, and no public name is left out."""
    assert len(set(mailpolicy.__all__)) == len(mailpolicy.__all__)
    for name in mailpolicy.__all__:
        assert hasattr(mailpolicy, name), name
    public = {
        n
        for n, v in vars(mailpolicy).items()
        # subpackages (mailpolicy.testing, later .django, .flask) are imported, not
        # exported; "@py_builtins" and the like are pytest's assertion-rewrite helpers
        if not n.startswith(("_", "@"))
        and n != "annotations"
        and not isinstance(v, types.ModuleType)
    }
    assert public <= set(mailpolicy.__all__), public - set(mailpolicy.__all__)


def test_version_matches_the_installed_metadata() -> None:
    assert mailpolicy.__version__ == importlib.metadata.version("mailpolicy")


def test_exceptions_subclass_what_callers_already_catch() -> None:
    assert issubclass(mailpolicy.InvalidInputError, TypeError)
    assert issubclass(mailpolicy.PolicyError, ValueError)
    assert issubclass(mailpolicy.InvalidInputError, mailpolicy.MailPolicyError)
    err = mailpolicy.PolicyError("bulk.toml", "rules[2].when.enhanced", "bad pattern")
    assert str(err) == "bulk.toml: rules[2].when.enhanced: bad pattern"


def test_readme_classify_example_runs() -> None:
    """The README's classification example is executed as written."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    (example,) = [b for b in blocks if "from mailpolicy import classify" in b]
    exec(compile(example, "README.md", "exec"), {})  # noqa: S102 - our own README
