"""Where things are: the data dir and the Redis and ClickHouse the platform talks to.

Everything comes from the environment, so the same code runs on the embedded default and on real
deployments:

    MARKETDATA_HOME             data dir (default ./.marketdata)
    MARKETDATA_REDIS_URL        any Redis (7.x, 8.x); unset -> the embedded redis-server of this data dir
    MARKETDATA_CLICKHOUSE_URL   http(s)://user@host:port/db for a ClickHouse server; unset -> the local
                                server of this data dir (`marketdata up` / `marketdata clickhouse`)
    MARKETDATA_REDIS_PASSWORD, MARKETDATA_CLICKHOUSE_PASSWORD   secrets, never logged
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

CLICKHOUSE_DATABASE = "marketdata"


class NotConfigured(RuntimeError):
    """A store the command needs is neither configured nor running; the message says how to get one."""


def data_dir() -> Path:
    d = Path(os.environ.get("MARKETDATA_HOME") or ".marketdata").expanduser().resolve()
    d.mkdir(parents=True, exist_ok=True)
    return d


def embedded_redis_dir() -> Path:
    return data_dir() / "redis"


def redis_url() -> str:
    url = os.environ.get("MARKETDATA_REDIS_URL")
    if url:
        return url
    url_file = embedded_redis_dir() / "url"
    if url_file.exists():
        return url_file.read_text().strip()
    raise NotConfigured(
        "no Redis configured: set MARKETDATA_REDIS_URL=redis://host:port/0, or start the embedded one "
        f"with `marketdata up` (data dir {data_dir()})")


def embedded_clickhouse_dir() -> Path:
    """The local ClickHouse server's engine data; its URL file and log are in ``clickhouse-server/``."""
    return data_dir() / "clickhouse"


def clickhouse_url() -> str:
    url = os.environ.get("MARKETDATA_CLICKHOUSE_URL")
    if url:
        return url
    url_file = data_dir() / "clickhouse-server" / "url"
    if url_file.exists():
        return url_file.read_text().strip()
    raise NotConfigured(
        "no ClickHouse configured: set MARKETDATA_CLICKHOUSE_URL=http://host:8123, or start the local one "
        f"with `marketdata up` (the whole platform) or `marketdata clickhouse` (data dir {data_dir()})")


_SECRET_IN_URL = re.compile(r"(//[^:/@]*:)([^@]*)(@)")


def redact(url: str) -> str:
    """A URL safe to log: any password replaced by ***."""
    return _SECRET_IN_URL.sub(r"\1***\3", url)


def env_number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0,
               integer: bool = False, positive: bool = False) -> float:
    """A number from the environment, or the default when unset; a bad value fails with what to fix."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        v = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name}={raw!r} is not {kind}; unset it for the default ({default:g})") from None
    if positive and v <= 0:
        raise ValueError(f"{name}={raw!r} must be positive; unset it for the default ({default:g})")
    if v < minimum:
        raise ValueError(f"{name}={raw!r} must be >= {minimum:g}; unset it for the default ({default:g})")
    return v
