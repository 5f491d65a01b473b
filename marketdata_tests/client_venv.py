"""Virtualenvs for the independent-client tests: stock third-party clients (ccxt, cryptofeed) that
pin their own dependencies, each installed from `marketdata_tests/clients/requirements-<name>.txt`
into a venv of its own under a cache dir, so they never touch the project's environment.

The venv is built once per requirements file and interpreter (its name carries their hash) and
reused; `MARKETDATA_CLIENT_VENVS` moves the cache (default `~/.cache/marketdata/client-venvs`).
Builds are serialized by a file lock, so parallel test workers build a venv once."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

CLIENTS = Path(__file__).resolve().parent / "clients"


def cache_dir() -> Path:
    root = os.environ.get("MARKETDATA_CLIENT_VENVS") or Path.home() / ".cache" / "marketdata" / "client-venvs"
    return Path(root)


def client_python(name: str) -> Path:
    """The interpreter of the venv that has client `name` installed (built on first use)."""
    req = CLIENTS / f"requirements-{name}.txt"
    digest = hashlib.sha256(req.read_bytes() + sys.version.encode()).hexdigest()[:12]
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"{name}-{digest}"
    py = venv / "bin" / "python"
    done = venv / ".installed"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return py
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "-r", str(req)],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"installing {req.name} into {venv} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        done.write_text(req.read_text())
    return py
