"""Django's own SMTP backend tests, run against mailpolicy.django.EmailBackend.

Runs ``run_django_smtp_tests.py`` in a subprocess (Django's ``runtests.py`` needs its own
process): with this interpreter's Django (5.2 in the dev venv), and with Django 6.1 when
``MAILPOLICY_DJANGO61_PYTHON`` names a Python that has it. Skipped, with the reason, when
the Django sdist cannot be downloaded, unless ``MAILPOLICY_REQUIRE_DJANGO_SUITE=1`` (CI).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("django")
pytest.importorskip("aiosmtpd")

RUNNER = Path(__file__).with_name("run_django_smtp_tests.py")
NO_SDIST = 77
#: Django version → tests run (ours included) and accepted exceptions (docs/django.md).
EXPECTED = {"5.2": (54, 2), "6.1": (68, 2)}


def run_suite(python: str) -> None:
    env = dict(os.environ)
    if python != sys.executable:
        # Another Django: an sdist named for this interpreter's Django does not apply.
        env.pop("MAILPOLICY_DJANGO_SDIST", None)
    done = subprocess.run(
        [python, str(RUNNER)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    output = done.stdout + done.stderr
    if done.returncode == NO_SDIST and os.environ.get("MAILPOLICY_REQUIRE_DJANGO_SUITE") != "1":
        why = [line for line in output.splitlines() if line.startswith("cannot obtain")]
        pytest.skip((why or [output.strip()[-300:]])[0][:300])
    assert done.returncode == 0, output[-6000:]
    version = re.search(r"^Django (\d+\.\d+)", output, re.M)
    ran = re.search(r"^Ran (\d+) tests?", output, re.M)
    summary = re.search(r"^OK \(expected failures=(\d+)\)$", output, re.M)
    assert version, output[-3000:]
    assert ran, output[-3000:]
    assert summary, output[-3000:]
    tests, exceptions = EXPECTED[version.group(1)]
    assert (int(ran.group(1)), int(summary.group(1))) == (tests, exceptions), output[-3000:]


def test_django_smtp_suite_with_this_django() -> None:
    run_suite(sys.executable)


def test_django_61_smtp_suite() -> None:
    python = os.environ.get("MAILPOLICY_DJANGO61_PYTHON")
    if not python:
        pytest.skip("set MAILPOLICY_DJANGO61_PYTHON to a Python with Django 6.1 to run it")
    run_suite(python)
