"""One platform per data dir, and `marketdata status` on a live and on a stopped platform.

Real `marketdata up --no-dagster` processes on one data dir: the second is refused, names the
holder and touches nothing (no second redis-server, endpoints.json unchanged); `status --json`
reports the running one; after the holder is SIGKILLed (its lock is released by the kernel) a new
`up` takes the data dir; once everything stopped, `status` says what is down and exits 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import psutil
import yaml

from marketdata.procs import default_signals

from .harness import REPO, wait_for


def _env(home: Path, cfg: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKETDATA_", "DAGSTER_", "APCA_"))}
    env.update(MARKETDATA_HOME=str(home), MARKETDATA_CONFIG=str(cfg), PYTHONUNBUFFERED="1")
    return env


def _start_up(env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "marketdata.cli", "up", "--no-dagster"], env=env,
                            cwd=str(REPO), stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=default_signals)


def _cli(env: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marketdata.cli", *args], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout, preexec_fn=default_signals)


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def _describe(pid: int) -> str:
    try:
        p = psutil.Process(pid)
        return f"{pid}: {p.status()} {' '.join(p.cmdline())}"
    except psutil.Error as e:
        return f"{pid}: {e}"


def test_a_second_up_is_refused_a_killed_holder_does_not_block_and_status_reports(tmp_path):
    home = tmp_path / "home"
    cfg = tmp_path / "marketdata.yaml"
    cfg.write_text(yaml.safe_dump({
        "endpoints": "simulator",
        "venues": {"binance": {"symbols": ["BTC-USDT", "ETH-USDT"], "idle_timeout": 5}},
        "simulator": {"rate": 100, "seed": 5, "ping_interval": 2},
    }))
    env = _env(home, cfg)
    procs_file = home / "run" / "processes.json"
    logs = lambda p: Path(p).read_text(errors="replace")[-3000:]  # noqa: E731
    first = _start_up(env, tmp_path / "up1.log")
    orphans: list[int] = []
    try:
        state = wait_for(lambda: procs_file.exists() and orjson.loads(procs_file.read_bytes()), 120,
                         "the first up to start", on_timeout=lambda: logs(tmp_path / "up1.log"))
        assert state["pid"] == first.pid
        eps = home / "simulator" / "endpoints.json"
        eps_before = (eps.read_bytes(), eps.stat().st_mtime_ns)
        redis_pid = int((home / "redis" / "redis.pid").read_text())
        redis_url = (home / "redis" / "url").read_text()
        assert not (home / "simulator" / "ground_truth.csv").exists(), "ground truth written unasked"

        second = _cli(env, "up", "--no-dagster", timeout=60)
        assert second.returncode != 0
        out = second.stdout + second.stderr
        assert f"PID {first.pid}" in out and "started " in out and "marketdata.cli up" in out, out
        # Nothing of the first platform was touched.
        assert (eps.read_bytes(), eps.stat().st_mtime_ns) == eps_before
        assert int((home / "redis" / "redis.pid").read_text()) == redis_pid
        assert (home / "redis" / "url").read_text() == redis_url
        assert orjson.loads(procs_file.read_bytes())["pid"] == first.pid
        assert not [p for p in psutil.process_iter(["cmdline"])
                    if "redis-server" in " ".join(p.info["cmdline"] or []) and str(home) in
                    " ".join(p.info["cmdline"] or []) and p.pid != redis_pid]

        # status: the running platform and its venue, with a rate and the stores.
        def live_status():
            st = _cli(env, "status", "--json")
            rep = orjson.loads(st.stdout)
            v = rep["redis"]["venues"].get("binance", {})
            return (st.returncode == 0 and (v.get("ticks_per_s") or 0) > 0
                    and rep["clickhouse"]["tables"].get("ticks", {}).get("rows", 0) > 0) and rep
        rep = wait_for(live_status, 240, "a healthy status with ticks", interval=1,
                       on_timeout=lambda: _cli(env, "status", "--json").stdout + logs(tmp_path / "up1.log"))
        assert rep["platform"]["running"] and rep["platform"]["pid"] == first.pid
        assert rep["redis"]["up"] and rep["redis"]["used_memory_bytes"] > 0
        v = rep["redis"]["venues"]["binance"]
        assert v["status"] == "ok" and v["open_holes"] == 0 and v["persist_lag_s"] is not None
        assert v["last_tick_age_s"] < 30
        text = _cli(env, "status")
        assert text.returncode == 0
        assert "binance" in text.stdout and "ticks/s" in text.stdout and "persist lag" in text.stdout
        assert "clickhouse: up" in text.stdout and "ticks" in text.stdout

        # The holder dies without cleaning up: its lock goes with it.
        orphans = [c["pid"] for c in state["children"].values() if c["pid"]] + [redis_pid]
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        for pid in orphans:          # what the killed `up` left running, stopped by PID
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in orphans:
            wait_for(lambda pid=pid: _gone(pid), 30, f"orphan {pid} to stop",
                     on_timeout=lambda pid=pid: f"{_describe(pid)}\n" + "\n".join(
                         f"--- {f.name}\n{f.read_text(errors='replace')[-1500:]}"
                         for f in sorted((home / "logs").glob("*.log"))))
        third = _start_up(env, tmp_path / "up3.log")
        try:
            wait_for(lambda: procs_file.exists() and orjson.loads(procs_file.read_bytes())["pid"] == third.pid,
                     120, "a new up to take the data dir", on_timeout=lambda: logs(tmp_path / "up3.log"))
        finally:
            third.send_signal(signal.SIGTERM)
            assert third.wait(90) == 0, logs(tmp_path / "up3.log")
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
            first.wait(90)
        for pid in orphans:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)

    # Everything stopped: status says what is down, and fails.
    down = _cli(env, "status")
    assert down.returncode == 1
    assert "NOT RUNNING" in down.stdout and "redis:      DOWN" in down.stdout, down.stdout
    rep = orjson.loads(_cli(env, "status", "--json").stdout)
    assert not rep["platform"]["running"] and not rep["redis"]["up"] and rep["redis"]["error"]
