#!/usr/bin/env python3
"""Run Django's own SMTP backend tests against mailpolicy.django.EmailBackend.

Fetches the sdist of the *installed* Django version (``pip download --no-binary``; the
tests are not in the wheel), extracts its ``tests/`` directory and runs Django's
``runtests.py`` on our subclasses of its SMTP test classes:

- Django 5.2: ``tests/mail/tests.py`` ``SMTPBackendTests`` and
  ``SMTPBackendStoppedServerTests`` (module ``mailpolicy_smtp_django52``);
- Django 6.1: ``tests/mail/test_backends.py``, the same two classes
  (module ``mailpolicy_smtp_django61``).

Accepted exceptions are marked ``expectedFailure`` in those modules (see docs/django.md),
so the summary reads ``OK (expected failures=N)``; an unexpected success fails the run.

Usage: ``python tests/django_suite/run_django_smtp_tests.py [--sdist PATH] [-v N]``.
``--sdist`` (or ``$MAILPOLICY_DJANGO_SDIST``) is a downloaded ``django-X.tar.gz`` or an
extracted tree; otherwise it is downloaded into ``$MAILPOLICY_DJANGO_SDIST_CACHE``
(default: a ``mailpolicy-django-sdist`` folder in the temp directory) and reused.

Exit status: Django's runner's (0 = all passed), 2 for a broken setup (aiosmtpd missing:
every SMTP test would be skipped), 77 when the sdist cannot be obtained (the pytest
wrapper skips on it unless ``MAILPOLICY_REQUIRE_DJANGO_SUITE=1``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src"
NO_SDIST = 77
BROKEN = 2


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _download(version: str, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"[dD]jango-{version}.tar.gz"))
    if found:
        return found[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"django=={version}",
        "-d",
        str(cache),
    ]
    _say(f"downloading the Django {version} sdist: {' '.join(cmd)}")
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    found = sorted(cache.glob(f"[dD]jango-{version}.tar.gz"))
    if done.returncode != 0 or not found:
        raise LookupError(f"pip download failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return found[0]


def _extract_tests(sdist: Path, version: str, cache: Path) -> Path:
    """The sdist's ``tests/`` directory (extracted once, without the ``django/``
    package beside it, so the installed Django is the one tested)."""
    if sdist.is_dir():
        tests = sdist / "tests" if (sdist / "tests" / "runtests.py").exists() else sdist
        if not (tests / "runtests.py").exists():
            raise LookupError(f"{sdist} holds no tests/runtests.py")
        return tests
    target = cache / f"django-{version}-tests"
    tests = target / "tests"
    if (tests / "runtests.py").exists():
        return tests
    shutil.rmtree(target, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        members = []
        for member in tar.getmembers():
            _top, _, rest = member.name.partition("/")
            if rest == "tests" or rest.startswith("tests/"):
                member.name = rest
                members.append(member)
        if not members:
            raise LookupError(f"{sdist} has no tests/ directory")
        tar.extractall(target, members=members, filter="data")
    return tests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", default=os.environ.get("MAILPOLICY_DJANGO_SDIST"))
    parser.add_argument("-v", "--verbosity", default="1")
    args = parser.parse_args(argv)

    import django

    version = django.get_version()
    major_minor = django.VERSION[:2]
    if major_minor == (5, 2):
        module = "mailpolicy_smtp_django52"
    elif major_minor == (6, 1):
        module = "mailpolicy_smtp_django61"
    else:
        _say(f"no mapping of Django {version}'s SMTP tests (5.2 and 6.1 are covered)")
        return BROKEN
    if importlib.util.find_spec("aiosmtpd") is None:
        _say("aiosmtpd is not installed: Django's SMTP tests would all be skipped")
        return BROKEN

    cache = Path(
        os.environ.get("MAILPOLICY_DJANGO_SDIST_CACHE")
        or Path(tempfile.gettempdir()) / "mailpolicy-django-sdist"
    )
    try:
        sdist = Path(args.sdist) if args.sdist else _download(version, cache)
        tests = _extract_tests(sdist, version, cache)
    except (LookupError, OSError, tarfile.TarError) as exc:
        _say(f"cannot obtain the Django {version} sdist's tests: {exc}")
        return NO_SDIST

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), str(SRC), env.get("PYTHONPATH", "")) if p
    )
    cmd = [
        sys.executable,
        "runtests.py",
        module,
        "--parallel=1",
        f"--verbosity={args.verbosity}",
        "--noinput",
    ]
    _say(f"Django {version} ({tests}): {' '.join(cmd)}")
    return subprocess.run(cmd, cwd=tests, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
