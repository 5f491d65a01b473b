"""The `marketdata` command as a newcomer meets it: an unknown command says what was wrong, `tail`
of a stream that does not exist says so (with similar ones) instead of waiting forever, and every
option of every subcommand has a description."""

from __future__ import annotations

import io
import re
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest
import yaml

from marketdata.cli import main
from marketdata.stream import STREAMS_SET, encode_entry, stream_key
from marketdata.tick import Tick
from marketdata.tools import NoSuchStream, tail


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:        # argparse's --help
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def test_unknown_command_prints_usage_and_what_was_wrong():
    rc, out, err = _run(["stauts"])
    assert rc == 2
    assert "usage: marketdata COMMAND" in err and "  status " in err
    assert "unknown command 'stauts'; did you mean 'status'?" in err
    rc, _, err = _run(["qqqq"])
    assert rc == 2 and "unknown command 'qqqq'" in err and "did you mean" not in err
    rc, out, _ = _run(["--help"])
    assert rc == 0 and "usage: marketdata COMMAND" in out


def _options_without_help(help_text: str) -> list[str]:
    """Options in an argparse --help whose line carries no description (on the line itself, or
    on the indented line after it). An option listing its choices ({A,B}) describes itself."""
    lines = help_text.splitlines()
    missing = []
    in_options = False
    for i, line in enumerate(lines):
        if re.match(r"^(options|optional arguments|positional arguments).*:$", line):
            in_options = True
            continue
        if in_options and line and not line.startswith(" "):
            in_options = False
        if not in_options or not re.match(r"^  \S", line):
            continue
        invocation, _, desc = line.strip().partition("  ")
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        described = desc.strip() or (nxt.startswith(" " * 6) and not nxt.strip().startswith("-"))
        if not described and "{" not in invocation:
            missing.append(invocation)
    return missing


@pytest.mark.parametrize("argv", [
    ["up"], ["status"], ["simulate"], ["ingest"], ["persist"], ["tail"], ["decode"], ["bench"],
    ["bench", "--bars"], ["bench", "--books"], ["backfill"],
])
def test_every_option_has_a_description(argv):
    rc, out, err = _run([*argv, "--help"])
    assert rc == 0, err
    assert "options:" in out
    assert _options_without_help(out) == [], out


def _publish(r, exchange: str, symbol: str, trade_id: str) -> None:
    now = int(time.time() * 1e6)
    t = Tick.trade(exchange, symbol, now, "100.5", "0.1", "buy", trade_id, now)
    r.xadd(stream_key(exchange, symbol), encode_entry(exchange, symbol, [t]))
    r.sadd(STREAMS_SET, stream_key(exchange, symbol))


def test_tail_of_a_stream_that_does_not_exist_names_similar_ones(redis_server, redis_client, tmp_path,
                                                                 monkeypatch):
    cfg = tmp_path / "marketdata.yaml"
    cfg.write_text(yaml.safe_dump({"endpoints": "simulator",
                                   "venues": {"okx": {"symbols": ["BTC-USDT"]}}}))
    _publish(redis_client, "binance", "BTC-USDT", "41")
    _publish(redis_client, "binance", "ETH-USDT", "42")
    t0 = time.monotonic()
    with pytest.raises(NoSuchStream) as e:
        tail("binance:BTC-USDX", redis_url=redis_server.url, config_path=str(cfg), count=1)
    assert time.monotonic() - t0 < 5, "tail waited instead of answering"
    msg = str(e.value)
    assert "no stream binance:BTC-USDX" in msg and "similar: binance:BTC-USDT" in msg
    # Case slips are found too, and configured streams count as known.
    with pytest.raises(NoSuchStream, match=r"similar: .*okx:BTC-USDT"):
        tail("okx:btc-usdt", redis_url=redis_server.url, config_path=str(cfg), count=1)

    # Through the command: a message and a non-zero exit.
    monkeypatch.setenv("MARKETDATA_REDIS_URL", redis_server.url)
    rc, out, err = _run(["tail", "binance:BTC-USDX", "--config", str(cfg), "-n", "1"])
    assert rc == 1 and out == ""
    assert "marketdata tail: no stream binance:BTC-USDX" in err and "binance:BTC-USDT" in err

    # A stream that exists is tailed as before.
    buf = io.StringIO()
    assert tail("binance:ETH-USDT", redis_url=redis_server.url, config_path=str(cfg), count=1,
                from_start=True, out=buf) == 0
    assert '"trade_id":"42"' in buf.getvalue()


def test_loading_the_definitions_warns_nothing_about_owners():
    """Owners on jobs, sensors and schedules are beta in Dagster 1.13; loading the code location
    must not print that warning (the webserver, the daemon and every run load it)."""
    import subprocess
    code = ("import warnings, dagster\n"
            "warnings.filterwarnings('error', category=dagster.BetaWarning)\n"
            "import marketdata.definitions as d\n"
            "jobs = d.defs.resolve_all_job_defs()\n"
            "print(len(jobs))\n")
    from .harness import REPO
    p = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert int(p.stdout.strip()) > 0


@pytest.mark.parametrize("url, needle", [
    ("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/3", "only database 0"),
    ("redis+cluster://127.0.0.1", "host:port startup nodes"),
])
def test_a_cluster_url_the_platform_cannot_use_fails_the_start_saying_what_to_fix(url, needle, monkeypatch, tmp_path):
    monkeypatch.setenv("MARKETDATA_HOME", str(tmp_path))
    monkeypatch.setenv("MARKETDATA_REDIS_URL", url)
    code, out, err = _run(["tail", "binance:BTC-USDT", "-n", "1"])
    assert code == 2 and needle in err and "Traceback" not in err, (code, out, err)

