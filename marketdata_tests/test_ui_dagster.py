"""The Dagster UI in a real browser (issue 13): a person's first rebuild, on a live `marketdata up`.

`marketdata up` runs the whole platform (embedded Redis, the simulator on a fast clock, the Binance
connector, persist, dagster-webserver and dagster-daemon) in a temp data dir. The simulator starts
ten simulated minutes into an hour twelve hours ago (the first partition), at 60x, so that hour
closes within a wall minute with its first ten minutes missing: the platform did not exist then.

System Chromium, driven by Playwright (marketdata_tests/browser.py), then does what a person does:
opens the asset graph, expands the bars group, selects bars_1m, Materialize selected, types the
hour into the partition selection and launches one run; opens the run the toast names and waits
for it; reads bars_1m_complete's result for that partition on the check's Partitions tab, with its
missing minutes (the metadata's JSON), which must be what the completeness library finds in
ClickHouse; and reads every sensor's latest tick -- after each has ticked again since the run --
on its page: a sensor whose latest tick failed fails the test. A screenshot of every step is kept
under the test's temp dir (paths printed).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import httpx
import orjson
import pytest
import yaml
from playwright.sync_api import Page, expect, sync_playwright

from marketdata.bars import audit_hours, missing_by_pair, totals
from marketdata.clock import US_PER_HOUR, US_PER_MINUTE, now_us
from marketdata.procs import default_signals
from marketdata.storage.clickhouse import ClickHouse
from marketdata.storage.redis import free_port

from .browser import Screenshots, launch_chromium
from .harness import REPO, wait_for

# The sensors page is read after every sensor ticked since the run: the audit sensor ticks every
# 5 minutes, so this test takes about 5 minutes on an idle machine, most of it waiting (over 12 on
# one with a load of 50, where a queued run waits minutes for its turn on the clickhouse pool).
pytestmark = [pytest.mark.ui, pytest.mark.timeout(1500)]

PAIRS = [("binance", "BTC-USDT"), ("binance", "ETH-USDT")]
SPEED = 60                    # one simulated hour per wall minute
LATE_MINUTES = 10             # the platform starts this far into the audited hour
UI_TIMEOUT_MS = 60_000        # one UI step on a loaded 2-core machine
LOCATION, REPOSITORY = "marketdata", "__repository__"


def _key(us: int) -> str:
    return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).strftime("%Y-%m-%d-%H:%M")


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class UpStack:
    """`marketdata up` as a subprocess, with the GraphQL and ClickHouse reads the test needs."""

    def __init__(self, tmp_path, hour_us: int):
        self.home = tmp_path / "home"
        self.cfg = tmp_path / "marketdata.yaml"
        self.cfg.write_text(yaml.safe_dump({
            "endpoints": "simulator",
            "venues": {"binance": {"symbols": [s for _, s in PAIRS]}},
            "simulator": {"rate": 20, "seed": 3, "speed": SPEED, "ping_interval": 2,
                          "start": _iso(hour_us + LATE_MINUTES * US_PER_MINUTE)},
        }))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKETDATA_", "DAGSTER_"))}
        # No MARKETDATA_BARS_START: `up` starts the partitions where the data begins, the audited
        # hour (the simulator's clock starts in it), so few hours are listed and audited.
        env.update(MARKETDATA_HOME=str(self.home), MARKETDATA_CONFIG=str(self.cfg), PYTHONUNBUFFERED="1")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "up.log"
        self._out = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "marketdata.cli", "up", "--dagster-port", str(self.port)],
                                     env=env, cwd=str(REPO), stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=default_signals)
        self.http = httpx.Client(base_url=self.url, timeout=30.0)

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace")[-3000:]
        for name in ("dagster-webserver", "dagster-daemon"):
            p = self.home / "logs" / f"{name}.log"
            if p.exists():
                text += f"\n--- {name} ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:])
        return text

    def stop(self) -> int:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()
        return self.proc.returncode

    def gql(self, query: str, variables: dict | None = None) -> dict:
        r = self.http.post("/graphql", json={"query": query, "variables": variables or {}})
        r.raise_for_status()
        body = r.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def ui_ready(self) -> bool:
        """The webserver answers and has loaded the code location (`up` prints the address before)."""
        assert self.proc.poll() is None, f"marketdata up exited with {self.proc.returncode}\n{self.log()}"
        try:
            if self.http.get("/server_info").status_code != 200:
                return False
            d = self.gql("""{ workspaceOrError { ... on Workspace { locationEntries { name
                  locationOrLoadError { __typename } } } } }""")
        except httpx.HTTPError:
            return False
        return any(e["name"] == LOCATION and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
                   for e in d["workspaceOrError"].get("locationEntries", []))

    def run(self, run_id: str) -> dict:
        d = self.gql("""query($id: ID!) { runOrError(runId: $id) { __typename
              ... on Run { status endTime tags { key value } } } }""", {"id": run_id})
        return d["runOrError"]

    def sensors(self) -> list[dict]:
        d = self.gql("""query($r: RepositorySelector!) { sensorsOrError(repositorySelector: $r) {
              ... on Sensors { results { name sensorState { status
                ticks(limit: 1) { status timestamp error { message } } } } } } }""",
                     {"r": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}})
        return d["sensorsOrError"]["results"]

    def coverage_ends(self) -> dict[str, int]:
        ch = ClickHouse((self.home / "clickhouse-server" / "url").read_text())
        rows = ch.rows("SELECT symbol, max(to_us) FROM marketdata.coverage WHERE exchange = 'binance' GROUP BY symbol")
        return {str(s): int(t) for s, t in rows}


@pytest.fixture
def stack(tmp_path):
    hour = now_us() // US_PER_HOUR * US_PER_HOUR - 12 * US_PER_HOUR
    s = UpStack(tmp_path, hour)
    s.hour_us = hour
    try:
        yield s
    finally:
        rc = s.stop()
        assert rc == 0, s.log()


def _open_graph_and_launch(page: Page, shots: Screenshots, base: str, partition: str) -> str:
    """Asset graph -> expand `bars` -> select bars_1m -> Materialize selected -> one partition ->
    Launch 1 run -> the run the toast names, opened from the Runs page. Returns its run id."""
    page.goto(f"{base}/asset-groups")
    group = page.locator("div", has=page.get_by_text("bars", exact=True)).filter(
        has=page.get_by_role("img", name="unfold_more")).last
    expect(group).to_be_visible()
    shots.take("asset graph")
    group.get_by_role("img", name="unfold_more").click()
    node = page.get_by_text("bars_1m", exact=True).last
    expect(node).to_be_visible()
    node.click()
    materialize = page.get_by_role("button", name="Materialize selected…")
    expect(materialize).to_be_visible()
    shots.take("bars_1m selected")
    materialize.click()

    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Launch runs to materialize bars_1m")).to_be_visible()
    keys = dialog.get_by_placeholder("No matching partitions")
    keys.fill(partition)
    keys.press("Enter")
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    shots.take("partition chosen")
    dialog.get_by_role("button", name="Launch 1 run").click()

    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    expect(toast).to_be_visible()
    short = re.search(r"Launched run ([0-9a-f]{8})", toast.inner_text()).group(1)
    shots.take("run launched")
    # The toast fades after a few seconds (a screenshot on a loaded machine can take longer):
    # the run is opened from the Runs page by the id the toast named.
    page.goto(f"{base}/runs")
    page.locator(f"a[href^='/runs/{short}']").first.click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    return re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)


def _read_check_partition(page: Page, shots: Screenshots, base: str, partition: str) -> dict:
    """bars_1m_complete's latest evaluation of one partition, from the check's Partitions tab:
    its result tag, the run it came from, its expected/stored bars and its missing minutes (the
    missing_minutes metadata, as [Show JSON] shows it)."""
    page.goto(f"{base}/assets/bars_1m?view=checks")
    page.get_by_text("bars_1m_complete", exact=True).first.click()
    page.locator("button[role=tab]", has_text="Partitions").click()
    page.get_by_placeholder("Filter by partition…").fill(partition)
    # MiddleTruncate keeps a hidden copy of each name to measure it: click the visible one.
    page.get_by_text(partition, exact=True).filter(visible=True).last.click()
    detail = page.locator("div", has=page.get_by_text("Latest execution", exact=True)).filter(
        has=page.get_by_text("Target materialization", exact=True)).filter(has_text="missing_minutes").last
    expect(detail).to_be_visible()
    shots.take("completeness check of the partition")
    text = " ".join(detail.inner_text().split())
    status = re.search(rf"{re.escape(partition)}\s+(Failed|Passed|Succeeded|Execution failed)", text)
    run = re.search(r"Run\s+([0-9a-f]{8})", text)
    bars = {k: int(m.group(1)) for k in ("expected_bars", "stored_bars")
            if (m := re.search(rf"{k}\s+(\d+)", text))}
    detail.get_by_text("[Show JSON]").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("missing_minutes")).to_be_visible()
    shots.take("missing minutes")
    js = dialog.inner_text()
    missing = json.loads(js[js.index("{"):js.rindex("}") + 1])
    dialog.get_by_role("button", name="Close").click()
    return {"status": status and status.group(1), "run": run and run.group(1), "text": text, **bars,
            "missing": missing}


def _read_sensor_ticks(page: Page, shots: Screenshots, base: str, names: list[str]) -> dict[str, str]:
    """The automation page, then each sensor's page: its "Latest tick" row, as shown."""
    page.goto(f"{base}/automation")
    link = lambda n: page.locator(f"a[href$='/sensors/{n}']").first  # noqa: E731 (its name has icon labels)
    for n in names:
        expect(link(n)).to_be_visible()
    shots.take("automation")
    latest = {}
    for n in names:
        link(n).click()
        row = page.locator("tr", has=page.get_by_text("Latest tick", exact=True))
        expect(row).to_contain_text(re.compile(r"\d{1,2}:\d{2}:\d{2}"))
        latest[n] = " ".join(row.inner_text().split())
        shots.take(f"sensor {n}")
        page.go_back()
        expect(link(n)).to_be_visible()
    return latest


def test_rebuild_an_hour_from_the_ui_and_read_its_audit(stack, tmp_path):
    t0 = time.monotonic()
    hour, partition = stack.hour_us, _key(stack.hour_us)
    wait_for(stack.ui_ready, 240, "the Dagster webserver to answer with the code location loaded",
             interval=0.5, on_timeout=stack.log)
    # The audited hour is closed: every pair's persisted coverage has passed its end.
    wait_for(lambda: (e := stack.coverage_ends()) and all(e.get(s, 0) >= hour + US_PER_HOUR for _, s in PAIRS),
             120, "the audited hour to be persisted", interval=1.0, on_timeout=stack.log)
    t_ready = time.monotonic()
    # The partitions begin where the data begins (the audited hour), not at a fixed old date.
    d = stack.gql("""query($r: RepositorySelector!) { partitionSetsOrError(repositorySelector: $r,
          pipelineName: "bars_1m_job") { ... on PartitionSets { results { name
          partitionsOrError { ... on Partitions { results { name } } } } } } }""",
                  {"r": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}})
    keys = [p["name"] for ps in d["partitionSetsOrError"]["results"]
            for p in ps["partitionsOrError"]["results"]]
    assert keys and keys[0] == partition, keys[:5]

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            # A fresh profile gets Dagster's "Join the community" dialog on some first page: skip it.
            page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                                     lambda: page.get_by_role("button", name="Skip").click())
            shots = Screenshots(page, tmp_path / "screenshots")

            run_id = _open_graph_and_launch(page, shots, stack.url, partition)
            run = stack.run(run_id)
            assert {"key": "dagster/partition", "value": partition} in run["tags"], run
            wait_for(lambda: stack.run(run_id)["status"] in ("SUCCESS", "FAILURE", "CANCELED"), 600,
                     f"run {run_id}", interval=1.0, on_timeout=stack.log)
            run = stack.run(run_id)
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            shots.take("run finished")
            assert run["status"] == "SUCCESS", (run, stack.log())
            t_run = time.monotonic()

            shown = _read_check_partition(page, shots, stack.url, partition)
            audits = audit_hours(ClickHouse((stack.home / "clickhouse-server" / "url").read_text()), hour, hour + US_PER_HOUR, PAIRS)
            t = totals(audits)
            # The platform started LATE_MINUTES into the hour: the check fails, naming those minutes.
            assert shown["status"] == "Failed", shown
            assert (shown.get("expected_bars"), shown.get("stored_bars")) == (t.expected, t.stored), (shown, t)
            assert shown["missing"] == missing_by_pair(audits), shown
            assert shown["run"] in (run_id[:8], None), (shown, run_id)   # None: the audit sensor's re-audit
            missing = shown["missing"]
            before_start = [f"{_iso(hour + m * US_PER_MINUTE)[:16]}Z" for m in range(LATE_MINUTES)]
            for ex, sym in PAIRS:
                got = missing[f"{ex}:{sym}"]
                assert got[:LATE_MINUTES] == before_start, got
                # Once the connector had subscribed, nothing was lost.
                assert len(got) < LATE_MINUTES + 10, got

            # Every sensor ticks again after the run (the audit re-audits the rebuilt hour); then
            # none may be failing.
            ended = run["endTime"]
            running = [s["name"] for s in stack.sensors() if s["sensorState"]["status"] == "RUNNING"]
            assert running, stack.sensors()

            def ticked_since_run():
                st = {s["name"]: s["sensorState"]["ticks"] for s in stack.sensors() if s["name"] in running}
                return all(t and t[0]["timestamp"] > ended and t[0]["status"] != "STARTED" for t in st.values()) and st
            ticks = wait_for(ticked_since_run, 420, "every sensor to tick after the run", interval=2.0,
                             on_timeout=lambda: json.dumps(stack.sensors(), indent=1)[:3000])
            shown = _read_sensor_ticks(page, shots, stack.url, running)
        except Exception:
            if "shots" in locals():
                shots.take("at failure")
            raise
        finally:
            browser.close()

    failing = {n: (shown[n], ticks[n][0]["error"]) for n in running
               if "Failure" in shown[n] or ticks[n][0]["status"] == "FAILURE"}
    print(f"UI tier wall time: {time.monotonic() - t0:.1f}s (stack ready {t_ready - t0:.1f}s, "
          f"launch+run {t_run - t_ready:.1f}s); screenshots in {shots.dir}", flush=True)
    assert not failing, f"sensors failing: {orjson.dumps(failing).decode()[:3000]}"
